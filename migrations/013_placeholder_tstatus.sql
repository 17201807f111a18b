-- Placeholder on branch tstatus for migration 013 of another branch (cluster status, schedules), so that
-- 015_table_status.sql follows an unbroken sequence here. Delete it when the real 013 is merged.
SELECT 1;
