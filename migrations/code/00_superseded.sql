-- Signatures that earlier releases had and later replaced. CREATE OR REPLACE cannot remove an
-- overload, so each one is dropped here by name; a function whose signature changes adds its old
-- signature to this list.

-- Migration 001's table_diff and run_table_diff, before the options of migration 003.
DROP PROCEDURE IF EXISTS ace.run_table_diff(text, text[], int, text, bigint, int, uuid, text, bigint, jsonb);
DROP FUNCTION IF EXISTS ace.table_diff(text, text[], int, text, bigint, int);
