-- Squashed into 001_baseline.sql (tables) and migrations/code/ (functions). Kept so that the
-- version numbers of databases installed by earlier releases still mean what they meant: such a
-- database is at version 5 and skips 001-005; a fresh one runs 001 and these.
SELECT 1;
