-- Per-table sync status: each node's verdict on each table, from the last table-diff,
-- mtree-diff, rerun or repair (ace.table_sync, written by ace.record_table_status when such a
-- task ends), read with ace.table_status.
--
-- The verdict of a key: the version held by a strict majority of the diff's nodes wins, absence
-- counting as a version. A node that disagrees with the majority on some key is out_of_sync; a
-- node in a key with no majority is diverged (in a two-node diff, both nodes of every differing
-- key are); any other node is in_sync. A diverged key outweighs an out_of_sync one. The agent
-- counts them (sqlapi's tablestatus.go).

-- Whether a diff's summary covers the whole table: no row filter, no origin or time limit, and
-- every differing key stored (max_diff_rows not reached). A diff that covers part of the table
-- can say that a node differs, never that it is in sync.
CREATE OR REPLACE FUNCTION ace.diff_covers_table(summary jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(summary->>'table_filter', '') = ''
       AND coalesce(summary->>'against_origin', '') = ''
       AND summary->>'until' IS NULL
       AND NOT coalesce((summary->>'diff_row_limit_reached')::boolean, false)
$$;

-- Records the verdicts of a task that is ending with status and result, and a table_out_of_sync
-- or table_in_sync event (with the task's id, so only who may see the task sees it) for each
-- node whose verdict turned. The agent counts the verdicts as it stores a diff's rows (sqlapi's
-- tablestatus.go): verdicts holds, for each node that differs somewhere, {differing_keys,
-- diverged}; a node of the diff it does not list differs nowhere. The agent calls it in the transaction that records the end, before
-- the task's row is updated (so the end's finished_at is as close to its commit as it can be): a
-- table-diff, mtree-diff or rerun that completed replaces the table's verdicts for its nodes; a
-- repair (completed or not, but not a dry run) applies what it committed to the verdicts of the
-- diff it repaired. A node without differences is in_sync only if the diff covered the whole
-- table (ace.diff_covers_table, for a rerun or a repair also the diffs they started from);
-- otherwise its verdict is left as it was. It writes with the caller's privileges: only the
-- schema's owner (the agent) may.
CREATE OR REPLACE FUNCTION ace.record_table_status(task_id uuid, status text, result jsonb, verdicts jsonb) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    t ace.tasks;
    diff_id uuid;
    summary jsonb;
    whole boolean;
    v record;
    prev text;
    written int := 0;
BEGIN
    SELECT * INTO t FROM ace.tasks x WHERE x.task_id = record_table_status.task_id;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    IF t.task_type IN ('table-diff', 'mtree-diff', 'table-rerun') AND record_table_status.status = 'COMPLETED' THEN
        summary := record_table_status.result;
        whole := ace.diff_covers_table(summary)
                 AND (t.task_type <> 'table-rerun' OR ace.diff_chain_covers_table((t.args->>'diff_task')::uuid));
    ELSIF t.task_type = 'table-repair' AND record_table_status.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
          AND NOT coalesce((t.args->>'dry_run')::boolean, false) THEN
        diff_id := (t.args->>'diff_task')::uuid;
        SELECT x.result INTO summary FROM ace.tasks x WHERE x.task_id = diff_id AND x.status = 'COMPLETED';
        whole := ace.diff_chain_covers_table(diff_id);
    ELSE
        RETURN 0;
    END IF;
    IF summary->>'schema' IS NULL OR summary->>'table' IS NULL OR jsonb_typeof(summary->'nodes') <> 'array' THEN
        RETURN 0;
    END IF;
    FOR v IN SELECT n AS node_name,
                    CASE WHEN (verdicts->n->>'diverged')::boolean THEN 'diverged'
                         WHEN (verdicts->n->>'differing_keys')::bigint > 0 THEN 'out_of_sync' ELSE 'in_sync' END AS verdict,
                    coalesce((verdicts->n->>'differing_keys')::bigint, 0) AS differing_keys
             FROM jsonb_array_elements_text(summary->'nodes') n LOOP
        CONTINUE WHEN v.differing_keys = 0 AND NOT whole;
        SELECT s.verdict INTO prev FROM ace.table_sync s
        WHERE s.schema_name = summary->>'schema' AND s.rel_name = summary->>'table' AND s.node_name = v.node_name
        FOR UPDATE;
        INSERT INTO ace.table_sync AS s (schema_name, rel_name, node_name, verdict, differing_keys, as_of, as_of_task)
        VALUES (summary->>'schema', summary->>'table', v.node_name, v.verdict, v.differing_keys,
                clock_timestamp(), t.task_id)
        ON CONFLICT (schema_name, rel_name, node_name) DO UPDATE
            SET verdict = EXCLUDED.verdict, differing_keys = EXCLUDED.differing_keys,
                as_of = EXCLUDED.as_of, as_of_task = EXCLUDED.as_of_task;
        written := written + 1;
        IF v.verdict <> 'in_sync' AND coalesce(prev, 'in_sync') = 'in_sync' THEN
            PERFORM ace.record_event('table_out_of_sync', v.node_name, format('%I.%I', summary->>'schema', summary->>'table'), t.task_id,
                jsonb_build_object('verdict', v.verdict, 'previous', prev, 'differing_keys', v.differing_keys));
        ELSIF v.verdict = 'in_sync' AND prev IN ('out_of_sync', 'diverged') THEN
            PERFORM ace.record_event('table_in_sync', v.node_name, format('%I.%I', summary->>'schema', summary->>'table'), t.task_id,
                jsonb_build_object('verdict', v.verdict, 'previous', prev, 'differing_keys', 0));
        END IF;
    END LOOP;
    RETURN written;
END $$;

-- Whether a diff covers the whole table, and so does every diff a rerun rechecked before it: a
-- rerun looks only at the keys of the diff it reruns.
CREATE OR REPLACE FUNCTION ace.diff_chain_covers_table(diff_task uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    WITH RECURSIVE chain AS (
        SELECT t.task_id, t.task_type, t.args, t.result, 1 AS depth FROM ace.tasks t WHERE t.task_id = diff_chain_covers_table.diff_task
        UNION ALL
        SELECT b.task_id, b.task_type, b.args, b.result, c.depth + 1 FROM chain c
        JOIN ace.tasks b ON c.task_type = 'table-rerun' AND b.task_id = (c.args->>'diff_task')::uuid
        WHERE c.depth < 100)
    SELECT coalesce(bool_and(ace.diff_covers_table(c.result) AND c.task_type IN ('table-diff', 'mtree-diff', 'table-rerun')), false)
       -- the chain must end at a diff that compared the table itself, not a rerun whose diff expired
       AND EXISTS (SELECT 1 FROM chain c WHERE c.task_type IN ('table-diff', 'mtree-diff'))
    FROM chain c
$$;

-- The sync status of one table (named as a diff names it; the caller must be able to read it)
-- or, with NULL, of every table with a verdict that the caller may read: one row per table and
-- registered node. verdict is in_sync, out_of_sync, diverged, or unknown where no diff has looked
-- at the node yet; stale where the verdict is older than the table_status_max_age setting (NULL
-- for unknown). as_of_task is shown only to who may see that task.
CREATE OR REPLACE FUNCTION ace.table_status(INOUT table_name text DEFAULT NULL, OUT node_name text, OUT verdict text,
                                            OUT differing_keys bigint, OUT as_of timestamptz, OUT as_of_task uuid,
                                            OUT stale boolean)
RETURNS SETOF record LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
DECLARE
    wanted text;
BEGIN
    IF table_status.table_name IS NOT NULL THEN
        wanted := ace.resolve_table(table_status.table_name);
    END IF;
    RETURN QUERY
    WITH tables AS (
        SELECT DISTINCT s.schema_name, s.rel_name FROM ace.table_sync s
        WHERE wanted IS NULL OR format('%I.%I', s.schema_name, s.rel_name) = wanted
        UNION
        SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE wanted IS NOT NULL AND c.oid = wanted::regclass)
    SELECT format('%I.%I', tb.schema_name, tb.rel_name), n.node_name,
           coalesce(s.verdict, 'unknown'), s.differing_keys, s.as_of,
           CASE WHEN EXISTS (SELECT 1 FROM ace.tasks x WHERE x.task_id = s.as_of_task) THEN s.as_of_task END,
           s.as_of < now() - coalesce(ace.setting('table_status_max_age'), '1 day')::interval
    FROM tables tb CROSS JOIN ace.nodes n
    LEFT JOIN ace.table_sync s ON s.schema_name = tb.schema_name AND s.rel_name = tb.rel_name AND s.node_name = n.node_name
    ORDER BY 1, 2;
END $$;
