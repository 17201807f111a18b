-- Per-table sync status (issue 19): what the last diff, rerun or repair of each table said about
-- each node, as counts only, never keys or values. Written by ace.record_table_status when such a
-- task ends; read with ace.table_status.
--
-- Who may read a row: a role that may SELECT the table. The verdict and its count are no row
-- data, but they say that a table drifted, which a role that may not read the table should not
-- learn. The task the verdict comes from is shown only to who may see that task (ace.tasks' own
-- rule), by ace.table_status. The schema's owner (the agent) reads every row, for /metrics.
CREATE TABLE ace.table_sync (
    schema_name    text NOT NULL,
    rel_name       text NOT NULL,
    node_name      text NOT NULL,
    verdict        text NOT NULL CONSTRAINT table_sync_verdict CHECK (verdict IN ('in_sync', 'out_of_sync', 'diverged')),
    differing_keys bigint NOT NULL,
    as_of          timestamptz NOT NULL,  -- when the task that gave the verdict ended
    as_of_task     uuid NOT NULL,         -- no reference: the verdict outlives the task's retention
    PRIMARY KEY (schema_name, rel_name, node_name)
);
ALTER TABLE ace.table_sync ENABLE ROW LEVEL SECURITY;
CREATE POLICY table_sync_readable ON ace.table_sync FOR SELECT
    USING (coalesce(has_table_privilege(to_regclass(format('%I.%I', schema_name, rel_name)), 'SELECT'), false));
GRANT SELECT ON ace.table_sync TO PUBLIC;
