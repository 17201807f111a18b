-- Every table-diff option of ACE, plus recheck_after: the same names in ace.table_diff(...),
-- the CLI flags (with dashes) and the task's args.

-- Guardrails on the block size, as ACE's table_diff.min/max_diff_block_size; override_block_size
-- lifts them.
CREATE FUNCTION ace.check_range(args jsonb, key text, lo numeric, hi numeric, hint text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF args ? key AND args->key <> 'null'::jsonb
       AND (jsonb_typeof(args->key) <> 'number' OR (args->>key)::numeric < lo OR (args->>key)::numeric > hi) THEN
        RAISE EXCEPTION '% must be between % and %, got %', key, lo, hi, args->key
            USING ERRCODE = 'invalid_parameter_value', HINT = coalesce(hint, '');
    END IF;
END $$;

CREATE OR REPLACE FUNCTION ace.validate_table_diff(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    key_name text;
BEGIN
    args := args
        || jsonb_build_object('table_name', ace.resolve_table(args->>'table_name'))
        || jsonb_build_object('nodes', to_jsonb(ace.resolve_nodes(
               CASE WHEN jsonb_typeof(args->'nodes') = 'array'
                    THEN ARRAY(SELECT jsonb_array_elements_text(args->'nodes')) END)));
    PERFORM ace.check_positive(args, k) FROM unnest(ARRAY['block_size', 'max_diff_rows', 'compare_unit_size']) k;
    IF NOT coalesce((args->>'override_block_size')::boolean, false) THEN
        PERFORM ace.check_range(args, 'block_size', 1000, 1000000,
            'Pass override_block_size => true to use a block size outside the guardrails.');
    END IF;
    PERFORM ace.check_range(args, 'max_connections', 0, 1000);
    IF args ? 'concurrency_factor' AND args->'concurrency_factor' <> 'null'::jsonb
       AND (jsonb_typeof(args->'concurrency_factor') <> 'number' OR (args->>'concurrency_factor')::numeric <= 0
            OR (args->>'concurrency_factor')::numeric > 4) THEN
        RAISE EXCEPTION 'concurrency_factor must be greater than 0 and at most 4, got %', args->'concurrency_factor'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(args->'recheck_after') = 'number' THEN
        args := args || jsonb_build_object('recheck_after', (args->>'recheck_after') || ' seconds');
    END IF;
    FOREACH key_name IN ARRAY ARRAY['table_filter', 'against_origin', 'output', 'until'] LOOP
        IF jsonb_typeof(args->key_name) NOT IN ('string', 'null') THEN
            RAISE EXCEPTION '% must be a string', key_name USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    IF coalesce(args->>'output', 'json') NOT IN ('json', 'html', 'csv') THEN
        RAISE EXCEPTION 'output must be json, html or csv, got "%"', args->>'output' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Normalised here so the agent reads one form: until as ISO 8601, recheck_after as seconds.
    BEGIN
        IF args->>'until' IS NOT NULL THEN
            args := args || jsonb_build_object('until', (args->>'until')::timestamptz);
        END IF;
        IF args->>'recheck_after' IS NOT NULL THEN
            args := args || jsonb_build_object('recheck_after', extract(epoch FROM (args->>'recheck_after')::interval));
            IF (args->>'recheck_after')::numeric < 0 THEN
                RAISE EXCEPTION 'recheck_after must not be negative' USING ERRCODE = 'invalid_parameter_value';
            END IF;
        END IF;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'invalid until or recheck_after: %', SQLERRM
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'until is a timestamp such as ''2025-06-01 12:00:00+00''; recheck_after an interval such as ''30 seconds''.';
    END;
    IF args->>'until' IS NOT NULL OR args->>'against_origin' IS NOT NULL THEN
        IF current_setting('track_commit_timestamp') <> 'on' THEN
            RAISE EXCEPTION 'until and against_origin need track_commit_timestamp = on on every node; it is off here'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Set track_commit_timestamp = on in postgresql.conf and restart; rows written before that have no commit timestamp.';
        END IF;
    END IF;
    RETURN args;
END $$;

DROP PROCEDURE ace.run_table_diff(text, text[], int, text, bigint, int, uuid, text, bigint, jsonb);
DROP FUNCTION ace.table_diff(text, text[], int, text, bigint, int);

CREATE FUNCTION ace.table_diff(
    table_name text,
    nodes text[] DEFAULT NULL,
    block_size int DEFAULT NULL,
    table_filter text DEFAULT NULL,
    max_diff_rows bigint DEFAULT NULL,
    compare_unit_size int DEFAULT NULL,
    concurrency_factor float8 DEFAULT NULL,
    max_connections int DEFAULT NULL,
    against_origin text DEFAULT NULL,
    until timestamptz DEFAULT NULL,
    output text DEFAULT NULL,
    recheck_after interval DEFAULT NULL,
    override_block_size boolean DEFAULT NULL
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('table-diff', jsonb_strip_nulls(jsonb_build_object(
        'table_name', table_name, 'nodes', nodes, 'block_size', block_size,
        'table_filter', table_filter, 'max_diff_rows', max_diff_rows, 'compare_unit_size', compare_unit_size,
        'concurrency_factor', concurrency_factor, 'max_connections', max_connections,
        'against_origin', against_origin, 'until', until, 'output', output,
        'recheck_after', recheck_after::text, 'override_block_size', override_block_size)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

CREATE PROCEDURE ace.run_table_diff(
    table_name text,
    nodes text[] DEFAULT NULL,
    block_size int DEFAULT NULL,
    table_filter text DEFAULT NULL,
    max_diff_rows bigint DEFAULT NULL,
    compare_unit_size int DEFAULT NULL,
    concurrency_factor float8 DEFAULT NULL,
    max_connections int DEFAULT NULL,
    against_origin text DEFAULT NULL,
    until timestamptz DEFAULT NULL,
    output text DEFAULT NULL,
    recheck_after interval DEFAULT NULL,
    override_block_size boolean DEFAULT NULL,
    INOUT task_id uuid DEFAULT NULL,
    INOUT status text DEFAULT NULL,
    INOUT differing_rows bigint DEFAULT NULL,
    INOUT summary jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
BEGIN
    task_id := ace.table_diff(table_name, nodes, block_size, table_filter, max_diff_rows, compare_unit_size,
                              concurrency_factor, max_connections, against_origin, until, output, recheck_after,
                              override_block_size);
    RAISE NOTICE 'submitted table-diff task %', task_id;
    COMMIT;
    CALL ace.follow_task(task_id, status, summary);
    IF status = 'COMPLETED' THEN
        differing_rows := (summary->>'differing_keys')::bigint;
        RAISE NOTICE '%', ace.describe_diff(summary);
        IF differing_rows > 0 THEN
            RAISE NOTICE 'see the rows with: SELECT * FROM ace.diff_rows(''%'');', task_id;
        END IF;
    END IF;
END $$;

-- Waits for a task, raising a NOTICE whenever its progress changes, and returns how it ended.
-- Shared by the CALL forms of every task type.
CREATE PROCEDURE ace.follow_task(task_id uuid, INOUT status text DEFAULT NULL, INOUT result jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $$
DECLARE
    t ace.tasks;
    last_progress jsonb;
BEGIN
    LOOP
        SELECT * INTO t FROM ace.tasks x WHERE x.task_id = follow_task.task_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'task % does not exist', task_id USING ERRCODE = 'no_data_found';
        END IF;
        IF t.progress IS DISTINCT FROM last_progress AND t.progress IS NOT NULL THEN
            RAISE NOTICE '%', ace.describe_progress(t.progress);
            last_progress := t.progress;
        END IF;
        EXIT WHEN t.status IN ('COMPLETED', 'FAILED', 'CANCELLED');
        PERFORM pg_sleep(0.2);
    END LOOP;
    status := t.status;
    result := t.result;
    IF t.status <> 'COMPLETED' THEN
        RAISE WARNING '% task % %: %', t.task_type, task_id, t.status, t.error;
    END IF;
END $$;

-- Progress in one line; parts a task type does not report are left out.
CREATE OR REPLACE FUNCTION ace.describe_progress(progress jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT concat_ws(', ', progress->>'phase',
        CASE WHEN (progress->>'blocks_total')::bigint > 0 THEN format('%s/%s blocks', progress->>'blocks_done', progress->>'blocks_total') END,
        CASE WHEN (progress->>'rows_hashed')::bigint > 0 THEN format('%s rows hashed', progress->>'rows_hashed') END,
        CASE WHEN (progress->>'differing_keys')::bigint > 0 THEN format('%s differing row(s) so far', progress->>'differing_keys') END)
$$;
