-- The SQL API of repairs: ace.table_repair, ace.table_rerun and importing ACE diff files
-- (ace.diff_import). A repair refers to a completed diff (a table-diff, a table-rerun or an
-- imported ACE diff file) by its task id, and records what it did (or, in a dry run, would do) to
-- every row in ace.repair_actions.

-- Imports an ACE diff file (its JSON) as a diff task; the agent stores its rows in
-- ace.diff_results. Repair or recheck it once it is COMPLETED.
CREATE OR REPLACE FUNCTION ace.diff_import(diff jsonb, file_name text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('diff-import', jsonb_strip_nulls(jsonb_build_object('diff', diff, 'file_name', file_name)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

CREATE OR REPLACE FUNCTION ace.table_repair(
    diff_task uuid,
    source_of_truth text DEFAULT NULL,
    dry_run boolean DEFAULT false,
    upsert_only boolean DEFAULT false,
    insert_only boolean DEFAULT false,
    bidirectional boolean DEFAULT false,
    fix_nulls boolean DEFAULT false,
    fire_triggers boolean DEFAULT false,
    generate_report boolean DEFAULT false,
    strategy text DEFAULT NULL,
    atomic boolean DEFAULT false,
    check_unchanged boolean DEFAULT true,
    target_nodes text[] DEFAULT NULL,
    repair_plan text DEFAULT NULL,
    plan jsonb DEFAULT NULL,
    recovery_mode boolean DEFAULT false,
    preserve_origin boolean DEFAULT false
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('table-repair', jsonb_strip_nulls(jsonb_build_object(
        'diff_task', diff_task, 'source_of_truth', source_of_truth, 'dry_run', dry_run, 'upsert_only', upsert_only,
        'insert_only', insert_only, 'bidirectional', bidirectional, 'fix_nulls', fix_nulls, 'fire_triggers', fire_triggers,
        'generate_report', generate_report, 'strategy', strategy, 'atomic', atomic, 'check_unchanged', check_unchanged,
        'target_nodes', target_nodes,
        'repair_plan', repair_plan, 'plan', plan,
        'recovery_mode', recovery_mode, 'preserve_origin', preserve_origin)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

CREATE OR REPLACE FUNCTION ace.table_rerun(diff_task uuid) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args) VALUES ('table-rerun', jsonb_build_object('diff_task', diff_task))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

-- What a repair did (or, in a dry run, would do) to each row on each node; rule names the plan's
-- rule (or row override, or default) that decided the row, for a repair with a plan.
CREATE OR REPLACE FUNCTION ace.repair_rows(task_id uuid)
RETURNS TABLE (node text, action text, pk jsonb, source text, before jsonb, after jsonb, reason text, applied boolean, attempt int,
               rule text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = repair_rows.task_id) THEN
        RAISE EXCEPTION 'task % does not exist', task_id USING ERRCODE = 'no_data_found';
    END IF;
    -- applied: the action's commit on its node is recorded once per node in ace.repair_commits
    -- (the applied column holds it for repairs recorded before that table).
    -- A key range copied whole (a node's resync) is one insert whose after is the range
    -- ({lo, hi, rows, ...}: rows rows copied from source).
    RETURN QUERY SELECT a.node, a.action, a.pk, a.source, a.before, coalesce(a.after, a.key_range), a.reason,
            a.applied OR (a.action <> 'skip' AND EXISTS (SELECT 1 FROM ace.repair_commits c
                WHERE c.task_id = a.task_id AND c.attempt = a.attempt AND c.node = a.node)),
            a.attempt, a.rule
        FROM ace.repair_actions a WHERE a.task_id = repair_rows.task_id ORDER BY a.node, a.pk_sort, a.row_no;
END $$;

-- A one-line account of a repair's result, for NOTICEs.
CREATE OR REPLACE FUNCTION ace.describe_repair(result jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN result IS NULL THEN 'no result' ELSE
        format('%s%s: %s%s', CASE WHEN (result->>'dry_run')::boolean THEN 'dry run of ' ELSE '' END, result->>'table_name',
            coalesce((SELECT string_agg(format('%s %s inserted, %s updated, %s deleted, %s skipped', key,
                                               value->>'inserted', value->>'updated', value->>'deleted', value->>'skipped'), '; ' ORDER BY key)
                      FROM jsonb_each(result->'nodes')), 'no nodes'),
            CASE WHEN (result->>'unresolved')::bigint > 0
                 THEN format('; %s row(s) left unrepaired (%s)', result->>'unresolved',
                             (SELECT string_agg(key || ' ' || value, ', ' ORDER BY key) FROM jsonb_each_text(result->'skipped_by_reason')))
                 ELSE '' END)
    END
$$;

-- Submits a repair, commits it, and waits, raising a NOTICE whenever progress changes. It must
-- be called outside a transaction block, because it commits.
CREATE OR REPLACE PROCEDURE ace.run_table_repair(
    diff_task uuid,
    source_of_truth text DEFAULT NULL,
    dry_run boolean DEFAULT false,
    upsert_only boolean DEFAULT false,
    insert_only boolean DEFAULT false,
    bidirectional boolean DEFAULT false,
    fix_nulls boolean DEFAULT false,
    fire_triggers boolean DEFAULT false,
    generate_report boolean DEFAULT false,
    strategy text DEFAULT NULL,
    atomic boolean DEFAULT false,
    check_unchanged boolean DEFAULT true,
    target_nodes text[] DEFAULT NULL,
    repair_plan text DEFAULT NULL,
    plan jsonb DEFAULT NULL,
    recovery_mode boolean DEFAULT false,
    preserve_origin boolean DEFAULT false,
    INOUT task_id uuid DEFAULT NULL,
    INOUT status text DEFAULT NULL,
    INOUT outcome text DEFAULT NULL,
    INOUT summary jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
BEGIN
    task_id := ace.table_repair(diff_task, source_of_truth, dry_run, upsert_only, insert_only, bidirectional, fix_nulls,
                                fire_triggers, generate_report, strategy, atomic, check_unchanged, target_nodes,
                                repair_plan, plan,
                                recovery_mode, preserve_origin);
    RAISE NOTICE 'submitted table-repair task %', task_id;
    COMMIT;
    CALL ace.follow_submitted(task_id, status, outcome, summary);
END $$;

CREATE OR REPLACE PROCEDURE ace.run_table_rerun(
    diff_task uuid,
    INOUT task_id uuid DEFAULT NULL,
    INOUT status text DEFAULT NULL,
    INOUT differing_rows bigint DEFAULT NULL,
    INOUT outcome text DEFAULT NULL,
    INOUT summary jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
BEGIN
    task_id := ace.table_rerun(diff_task);
    RAISE NOTICE 'submitted table-rerun task %', task_id;
    COMMIT;
    CALL ace.follow_submitted(task_id, status, outcome, summary);
    differing_rows := (summary->>'differing_keys')::bigint;
END $$;
