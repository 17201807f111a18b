-- The SQL API of replication-set diffs: ace.repset_diff, its CALL form, its validator and the
-- one-line account of its result. The agent reads the set's members (and their row filters)
-- on each node and runs one child table-diff per member table (see 80_schema_diff.sql for the
-- parent/child checks).

CREATE OR REPLACE FUNCTION ace.repset_diff(
    repset text,
    nodes text[] DEFAULT NULL,
    skip_tables text[] DEFAULT NULL,
    provider text DEFAULT NULL,
    block_size int DEFAULT NULL,
    table_filter text DEFAULT NULL,
    max_diff_rows bigint DEFAULT NULL,
    compare_unit_size int DEFAULT NULL,
    concurrency_factor float8 DEFAULT NULL,
    max_connections int DEFAULT NULL,
    override_block_size boolean DEFAULT false
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('repset-diff', jsonb_strip_nulls(jsonb_build_object(
        'repset', repset, 'nodes', nodes, 'skip_tables', skip_tables, 'provider', provider,
        'block_size', block_size, 'table_filter', table_filter, 'max_diff_rows', max_diff_rows,
        'compare_unit_size', compare_unit_size, 'concurrency_factor', concurrency_factor,
        'max_connections', max_connections, 'override_block_size', override_block_size)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

CREATE OR REPLACE PROCEDURE ace.run_repset_diff(
    repset text,
    nodes text[] DEFAULT NULL,
    skip_tables text[] DEFAULT NULL,
    provider text DEFAULT NULL,
    block_size int DEFAULT NULL,
    table_filter text DEFAULT NULL,
    max_diff_rows bigint DEFAULT NULL,
    compare_unit_size int DEFAULT NULL,
    concurrency_factor float8 DEFAULT NULL,
    max_connections int DEFAULT NULL,
    override_block_size boolean DEFAULT false,
    INOUT task_id uuid DEFAULT NULL,
    INOUT status text DEFAULT NULL,
    INOUT outcome text DEFAULT NULL,
    INOUT summary jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
BEGIN
    task_id := ace.repset_diff(repset, nodes, skip_tables, provider, block_size, table_filter, max_diff_rows,
                               compare_unit_size, concurrency_factor, max_connections, override_block_size);
    RAISE NOTICE 'submitted repset-diff task %', task_id;
    COMMIT;
    CALL ace.follow_submitted(task_id, status, outcome, summary);
END $$;

-- A one-line account of a replication-set diff's result.
CREATE OR REPLACE FUNCTION ace.describe_repset_diff(summary jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN summary IS NULL THEN 'no summary'
        ELSE format('replication set %s: %s table(s): %s identical, %s differ, %s missing on some node, %s failed, %s skipped',
            summary->>'repset', summary->>'tables_total', jsonb_array_length(summary->'identical'),
            jsonb_array_length(summary->'differed'), jsonb_array_length(summary->'missing'),
            jsonb_array_length(summary->'failed'), jsonb_array_length(summary->'skipped'))
    END
$$;

-- repset-diff's skip_tables (ace.skip_tables_entries), each quoted as the members are named:
-- schema.table, or a bare table name that matches that table in any schema.
CREATE OR REPLACE FUNCTION ace.repset_skip_tables_arg(args jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg((SELECT string_agg(quote_ident(p), '.' ORDER BY i) FROM unnest(e.parts) WITH ORDINALITY u(p, i))
                              ORDER BY e.n), '{}')
    FROM ace.skip_tables_entries(args) WITH ORDINALITY e(entry, parts, n)
$$;

CREATE OR REPLACE FUNCTION ace.validate_repset_diff(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    repset text := ace.text_arg(args, 'repset');
    provider text := lower(ace.text_arg(args, 'provider'));
BEGIN
    IF repset IS NULL THEN
        RAISE EXCEPTION 'repset is required' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name a Spock or pglogical replication set, or a publication.';
    END IF;
    IF provider IS NOT NULL AND provider NOT IN ('spock', 'pglogical', 'native') THEN
        RAISE EXCEPTION 'provider must be spock, pglogical or native, got "%"', provider
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave it NULL to detect it on each node.';
    END IF;
    IF coalesce(ace.text_arg(args, 'output'), 'json') <> 'json' THEN
        RAISE EXCEPTION 'output must be json for a repset diff, got "%"', args->>'output'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The result is stored as JSON; export a table''s diff as html or csv with ace-agent diff export.';
    END IF;
    args := args || jsonb_build_object('repset', repset, 'provider', provider,
        'nodes', to_jsonb(ace.resolve_nodes(ace.nodes_arg(args))),
        'skip_tables', to_jsonb(ace.repset_skip_tables_arg(args)),
        'override_block_size', ace.bool_arg(args, 'override_block_size', false),
        'table_filter', ace.text_arg(args, 'table_filter'));
    PERFORM ace.check_positive(args, k) FROM unnest(ARRAY['block_size', 'max_diff_rows', 'compare_unit_size']) k;
    IF NOT (args->>'override_block_size')::boolean THEN
        PERFORM ace.check_range(args, 'block_size', 1000, 1000000,
            'Pass override_block_size => true to use a block size outside the guardrails.');
    END IF;
    PERFORM ace.check_range(args, 'max_connections', 0, 1000);
    PERFORM ace.check_range(args, 'concurrency_factor', 0, 4);
    SELECT jsonb_object_agg(key, value) INTO args FROM jsonb_each(args)
        WHERE key = ANY (ARRAY['repset', 'provider', 'nodes', 'skip_tables', 'override_block_size', 'block_size',
            'table_filter', 'max_diff_rows', 'compare_unit_size', 'concurrency_factor', 'max_connections']);
    RETURN jsonb_strip_nulls(args);
END $$;
