-- The SQL API of Spock exceptions (issue 18): ace.spock_exception_sync (a task: on each node,
-- give every spock.exception_log entry its PENDING status rows and collect the node's exceptions),
-- ace.spock_exceptions (what the caller's latest sync collected) and ace.update_spock_exception
-- (a task: set an exception's status on one node, as ACE's Python API does, keyed as Spock 5
-- keys it). Spock is detected on each node by its relations, not by pg_extension, when the
-- task runs there.

-- The Spock tasks work on each node alone, so one node is enough (a diff needs two).
CREATE OR REPLACE FUNCTION ace.resolve_spock_nodes(nodes text[]) RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF cardinality(nodes) = 1 AND nodes <> ARRAY['all'] THEN
        PERFORM ace.check_named_nodes(ARRAY[btrim(nodes[1])]);
        RETURN ARRAY[btrim(nodes[1])];
    END IF;
    RETURN ace.resolve_nodes(nodes);
END $$;

CREATE OR REPLACE FUNCTION ace.validate_spock_exception_sync(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN jsonb_build_object('nodes', to_jsonb(ace.resolve_spock_nodes(ace.nodes_arg(args))));
END $$;

CREATE OR REPLACE FUNCTION ace.spock_exception_sync(nodes text[] DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('spock-exception-sync', jsonb_strip_nulls(jsonb_build_object('nodes', nodes)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

-- Whether the current user may see an exception's row images: those of table schema.name only
-- if they may SELECT it here (not when it is not here); an exception of no table (DDL) has none.
CREATE OR REPLACE FUNCTION ace.may_select(schema_name text, table_name text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN table_name IS NULL THEN true
                WHEN schema_name IS NULL THEN false
                ELSE coalesce(has_table_privilege(to_regclass(format('%I.%I', schema_name, table_name)), 'SELECT'), false) END
$$;

-- The exceptions the caller's latest completed sync of each node collected, per node and status.
-- The row images and the error message are shown only where the caller may SELECT the table on
-- this node now: a grant revoked since the sync hides them again.
CREATE OR REPLACE FUNCTION ace.spock_exceptions(node_name text DEFAULT NULL, status text DEFAULT NULL)
RETURNS TABLE (node_name text, remote_origin oid, remote_commit_ts timestamptz, command_counter integer,
               retry_errored_at timestamptz, remote_xid bigint, table_schema text, table_name text,
               operation text, status text, resolved_at timestamptz, resolution_details jsonb,
               local_origin oid, local_commit_ts timestamptz, local_tup jsonb, remote_old_tup jsonb,
               remote_new_tup jsonb, error_message text, ddl_statement text, ddl_user text, task_id uuid)
LANGUAGE sql STABLE AS $$
    WITH latest AS (
        SELECT DISTINCT ON (n.node) n.node, t.task_id
        FROM ace.tasks t CROSS JOIN LATERAL jsonb_array_elements_text(t.args->'nodes') AS n(node)
        WHERE t.task_type = 'spock-exception-sync' AND t.status = 'COMPLETED'
          AND t.submitted_by = current_user
        ORDER BY n.node, t.finished_at DESC
    ), shown AS (
        SELECT e.*, ace.may_select(e.table_schema, e.table_name) AS images
        FROM ace.spock_exception_rows e JOIN latest l ON l.task_id = e.task_id AND l.node = e.node_name
        WHERE (spock_exceptions.node_name IS NULL OR e.node_name = spock_exceptions.node_name)
          AND (spock_exceptions.status IS NULL OR upper(e.status) = upper(spock_exceptions.status))
    )
    SELECT s.node_name, s.remote_origin, s.remote_commit_ts, s.command_counter, s.retry_errored_at,
           s.remote_xid, s.table_schema, s.table_name, s.operation, s.status, s.resolved_at,
           s.resolution_details, s.local_origin, s.local_commit_ts,
           CASE WHEN s.images THEN s.local_tup END, CASE WHEN s.images THEN s.remote_old_tup END,
           CASE WHEN s.images THEN s.remote_new_tup END, CASE WHEN s.images THEN s.error_message END,
           s.ddl_statement, s.ddl_user, s.task_id
    FROM shown s
    ORDER BY s.node_name, s.remote_commit_ts, s.remote_origin, s.retry_errored_at, s.command_counter
$$;

CREATE OR REPLACE FUNCTION ace.validate_spock_exception_update(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    node text := ace.text_arg(args, 'node_name');
    required text;
    out jsonb;
BEGIN
    IF node IS NULL OR node = '' THEN
        RAISE EXCEPTION 'node_name is required: the node whose Spock exception to update'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name a node of ace.nodes.';
    END IF;
    node := (ace.resolve_spock_nodes(ARRAY[node]))[1];
    -- The command line gives resolution_details as text.
    IF jsonb_typeof(args->'resolution_details') = 'string' THEN
        BEGIN
            args := jsonb_set(args, '{resolution_details}', (args->>'resolution_details')::jsonb);
        EXCEPTION WHEN data_exception THEN
            RAISE EXCEPTION 'resolution_details is not JSON: %', SQLERRM
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Give a JSON object, e.g. {"details": "fixed by hand"}.';
        END;
    END IF;
    IF coalesce(jsonb_typeof(args->'resolution_details'), 'object') NOT IN ('object', 'null') THEN
        RAISE EXCEPTION 'resolution_details must be a JSON object, got %', args->'resolution_details'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give a JSON object, e.g. {"details": "fixed by hand"}.';
    END IF;
    FOREACH required IN ARRAY ARRAY['remote_origin', 'remote_commit_ts', 'remote_xid', 'status'] LOOP
        IF coalesce(args->>required, '') = '' THEN
            RAISE EXCEPTION '% is required: an exception is found by remote_origin, remote_commit_ts and remote_xid, and given a status', required
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'See the exceptions with SELECT * FROM ace.spock_exceptions();';
        END IF;
    END LOOP;
    BEGIN
        out := jsonb_build_object(
            'node_name', node,
            'remote_origin', (args->>'remote_origin')::oid::bigint,
            'remote_commit_ts', to_jsonb((args->>'remote_commit_ts')::timestamptz),
            'remote_xid', (args->>'remote_xid')::bigint,
            'status', args->>'status',
            'command_counter', (args->>'command_counter')::int,
            'retry_errored_at', to_jsonb((args->>'retry_errored_at')::timestamptz),
            'resolution_details', args->'resolution_details');
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'invalid exception key: %', SQLERRM
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'remote_origin is an oid, remote_commit_ts and retry_errored_at timestamps, remote_xid a bigint, command_counter an integer.';
    END;
    RETURN jsonb_strip_nulls(out);
END $$;

-- Without command_counter: the exception's spock.exception_status row and every one of its
-- spock.exception_status_detail rows; with it, only that detail row. Without retry_errored_at,
-- every retry of the transaction (ACE's trio); with it, only that retry.
CREATE OR REPLACE FUNCTION ace.update_spock_exception(node_name text, remote_origin oid, remote_commit_ts timestamptz,
    remote_xid bigint, status text, command_counter int DEFAULT NULL, resolution_details jsonb DEFAULT NULL,
    retry_errored_at timestamptz DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('spock-exception-update', jsonb_strip_nulls(jsonb_build_object(
        'node_name', node_name, 'remote_origin', remote_origin, 'remote_commit_ts', remote_commit_ts,
        'remote_xid', remote_xid, 'status', status, 'command_counter', command_counter,
        'resolution_details', resolution_details, 'retry_errored_at', retry_errored_at)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;
