-- Placeholder on the plans branch only: migration 013 belongs to another branch of issue 19/20.
-- It lets 016 load here (tern refuses gaps); the merge replaces this file with the real 013.
SELECT 1;
