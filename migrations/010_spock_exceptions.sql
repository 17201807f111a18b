-- Spock exceptions collected by ace.spock_exception_sync (issue 18): one row per entry of a
-- node's spock.exception_log, with the status Spock 5 keeps for it, keyed as Spock 5 keys them
-- (remote_origin, remote_commit_ts, command_counter, retry_errored_at). A sync task's rows are
-- visible to whoever may see the task, like a diff's rows.
CREATE TABLE ace.spock_exception_rows (
    task_id            uuid NOT NULL REFERENCES ace.tasks ON DELETE CASCADE,
    node_name          text NOT NULL,
    remote_origin      oid NOT NULL,
    remote_commit_ts   timestamptz NOT NULL,
    command_counter    integer NOT NULL,
    retry_errored_at   timestamptz NOT NULL,
    remote_xid         bigint NOT NULL,
    local_origin       oid,
    local_commit_ts    timestamptz,
    table_schema       text,
    table_name         text,
    operation          text,
    -- The row images and the error message, which quotes key values: stored only when the
    -- submitter could SELECT the table on that node, and shown only to a caller who can here.
    local_tup          jsonb,
    remote_old_tup     jsonb,
    remote_new_tup     jsonb,
    error_message      text,
    ddl_statement      text,
    ddl_user           text,
    status             text,
    resolved_at        timestamptz,
    resolution_details jsonb,
    PRIMARY KEY (task_id, node_name, remote_origin, remote_commit_ts, command_counter, retry_errored_at)
);
ALTER TABLE ace.spock_exception_rows ENABLE ROW LEVEL SECURITY;
CREATE POLICY spock_exception_rows_visible ON ace.spock_exception_rows FOR SELECT
    USING (EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = spock_exception_rows.task_id));
GRANT SELECT ON ace.spock_exception_rows TO PUBLIC;
