-- The SQL API of diffs: ace.table_diff, its CALL form, and reading the differing rows.

CREATE OR REPLACE FUNCTION ace.table_diff(
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
    override_block_size boolean DEFAULT false,
    columns text[] DEFAULT NULL
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
        'recheck_after', recheck_after::text, 'override_block_size', override_block_size, 'columns', columns)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

CREATE OR REPLACE PROCEDURE ace.run_table_diff(
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
    override_block_size boolean DEFAULT false,
    columns text[] DEFAULT NULL,
    INOUT task_id uuid DEFAULT NULL,
    INOUT status text DEFAULT NULL,
    INOUT differing_rows bigint DEFAULT NULL,
    INOUT outcome text DEFAULT NULL,
    INOUT summary jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
BEGIN
    task_id := ace.table_diff(table_name, nodes, block_size, table_filter, max_diff_rows, compare_unit_size,
                              concurrency_factor, max_connections, against_origin, until, output, recheck_after,
                              override_block_size, columns);
    RAISE NOTICE 'submitted table-diff task %', task_id;
    COMMIT;
    CALL ace.follow_submitted(task_id, status, outcome, summary);
    differing_rows := (summary->>'differing_keys')::bigint;
END $$;

CREATE OR REPLACE FUNCTION ace.diff_rows(task_id uuid)
RETURNS TABLE (pk jsonb, kind text, rows jsonb)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = diff_rows.task_id) THEN
        RAISE EXCEPTION 'task % does not exist', task_id USING ERRCODE = 'no_data_found';
    END IF;
    -- A key range stored as one row (a node's resync) reads as kind 'missing_range', its pk the
    -- range's bounds and its rows {lo, hi, rows, holders, empty, ...}: every key from lo up to
    -- hi is held by the holders (rows of them each, identical) and missing on the empty nodes.
    RETURN QUERY SELECT d.pk, CASE WHEN d.key_range IS NULL THEN d.kind ELSE 'missing_range' END, coalesce(d.key_range, d.rows)
        FROM ace.diff_results d WHERE d.task_id = diff_rows.task_id ORDER BY d.pk_sort, d.row_no;
END $$;

-- A one-line account of a diff's summary, for NOTICEs and the CLI.
CREATE OR REPLACE FUNCTION ace.describe_diff(summary jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN summary IS NULL THEN 'no summary'
        WHEN coalesce((SELECT sum(value::bigint) FROM jsonb_each_text(summary->'diff_rows_count')), 0) = 0
            THEN format('%s: in sync on %s (%s rows checked)', summary->>'table_name',
                        (SELECT string_agg(n, ', ') FROM jsonb_array_elements_text(summary->'nodes') n),
                        summary->>'total_rows_checked')
        ELSE format('%s: %s differing row(s) (%s); %s rows checked',
                    summary->>'table_name', summary->>'differing_keys',
                    (SELECT string_agg(key || ' ' || value, ', ' ORDER BY key) FROM jsonb_each_text(summary->'diff_rows_count') WHERE value::bigint > 0),
                    summary->>'total_rows_checked')
    END
$$;
