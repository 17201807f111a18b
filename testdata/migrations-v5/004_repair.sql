-- Repairs: ace.table_repair, ace.table_rerun and importing ACE diff files (ace.diff_import).
-- A repair refers to a completed diff (a table-diff, a table-rerun or an imported ACE diff file)
-- by its task id, and records what it did (or, in a dry run, would do) to every row in
-- ace.repair_actions.

-- One row per key and node a repair looked at: what it did there, or why it left the row alone.
CREATE TABLE ace.repair_actions (
    task_id uuid NOT NULL REFERENCES ace.tasks ON DELETE CASCADE,
    row_no  bigint NOT NULL,
    attempt int NOT NULL,
    node    text NOT NULL,
    action  text NOT NULL CONSTRAINT repair_action CHECK (action IN ('insert', 'update', 'delete', 'skip')),
    pk      jsonb NOT NULL,
    pk_sort jsonb NOT NULL,   -- the key's values as an array in key order, for ORDER BY
    source  text,             -- the node whose version of the row was copied
    before  jsonb,            -- the row on the node before the repair (null: absent)
    after   jsonb,            -- the row after it (null: absent); for a skip, what it would have been
    reason  text,             -- why a row was skipped, or what a partial fix left
    applied boolean NOT NULL DEFAULT false, -- committed on the node (never for skips and dry runs)
    PRIMARY KEY (task_id, row_no)
);
ALTER TABLE ace.repair_actions ENABLE ROW LEVEL SECURITY;
CREATE POLICY repair_actions_visible ON ace.repair_actions FOR SELECT
    USING (EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = repair_actions.task_id));
GRANT SELECT ON ace.repair_actions TO PUBLIC;

---- Validation helpers.

-- Reads a boolean argument (absent or null means dflt) and stores it back normalised.
CREATE FUNCTION ace.bool_arg(args jsonb, key text, dflt boolean) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT args ? key OR args->key = 'null'::jsonb THEN
        RETURN dflt;
    END IF;
    IF jsonb_typeof(args->key) <> 'boolean' THEN
        RAISE EXCEPTION '% must be true or false, got %', key, args->key USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN (args->>key)::boolean;
END $$;

-- Reads an optional text argument; '' counts as absent.
CREATE FUNCTION ace.text_arg(args jsonb, key text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF NOT args ? key OR args->key = 'null'::jsonb THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(args->key) <> 'string' THEN
        RAISE EXCEPTION '% must be a string, got %', key, args->key USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN nullif(btrim(args->>key), '');
END $$;

-- Finds the completed diff a repair or a rerun refers to, as the submitting user sees it (the
-- row-level security of ace.tasks applies), and returns its task row.
CREATE FUNCTION ace.completed_diff(args jsonb, purpose text) RETURNS ace.tasks
LANGUAGE plpgsql STABLE AS $$
DECLARE
    id uuid;
    t ace.tasks;
BEGIN
    IF ace.text_arg(args, 'diff_task') IS NULL THEN
        RAISE EXCEPTION 'diff_task is required: the id of the diff to %', purpose
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Run a diff first with ace.table_diff(''schema.table''), or import an ACE diff file with ace.diff_import(file).';
    END IF;
    BEGIN
        id := (args->>'diff_task')::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'diff_task "%" is not a task id', args->>'diff_task' USING ERRCODE = 'invalid_parameter_value';
    END;
    SELECT * INTO t FROM ace.tasks x WHERE x.task_id = id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'diff task % does not exist', id
            USING ERRCODE = 'no_data_found', HINT = 'A task is visible only to the role that submitted it (and its members).';
    END IF;
    IF t.task_type NOT IN ('table-diff', 'table-rerun', 'diff-import') THEN
        RAISE EXCEPTION 'task % is a % task, not a diff', id, t.task_type
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the id of a table-diff, table-rerun or diff-import task.';
    END IF;
    IF t.status <> 'COMPLETED' THEN
        RAISE EXCEPTION 'diff task % is %, not COMPLETED', id, t.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE WHEN t.status IN ('QUEUED', 'RUNNING') THEN format('Wait for it: SELECT ace.wait(''%s'');', id)
                              ELSE 'Run the diff again.' END;
    END IF;
    IF t.result IS NULL OR jsonb_typeof(t.result->'nodes') <> 'array' OR t.result->>'table_name' IS NULL THEN
        RAISE EXCEPTION 'diff task % has no usable summary', id USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN t;
END $$;

-- Raises unless the current user holds every privilege in privs on the table.
CREATE FUNCTION ace.check_privileges(tbl text, privs text[], purpose text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    missing text[];
BEGIN
    SELECT array_agg(p ORDER BY p) INTO missing FROM unnest(privs) p WHERE NOT has_table_privilege(current_user, tbl, p);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'permission denied: role % lacks % on table %, which %', current_user,
                        array_to_string(missing, ', '), tbl, purpose
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('GRANT %s ON %s TO %I; on every node, or ask someone who holds them to run the repair.',
                                array_to_string(missing, ', '), tbl, current_user);
    END IF;
END $$;

-- Rejects the option combinations ACE rejects, and ours, with the reason.
CREATE FUNCTION ace.check_repair_options(args jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    pairs text[][] := ARRAY[
        ['bidirectional', 'upsert_only'], ['bidirectional', 'fix_nulls'], ['fix_nulls', 'insert_only'],
        ['fix_nulls', 'upsert_only'], ['insert_only', 'upsert_only']];
    i int;
BEGIN
    FOR i IN 1 .. array_length(pairs, 1) LOOP
        IF (args->>pairs[i][1])::boolean AND (args->>pairs[i][2])::boolean THEN
            RAISE EXCEPTION '% and % cannot be combined', pairs[i][1], pairs[i][2]
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE pairs[i][1] || '+' || pairs[i][2]
                          WHEN 'bidirectional+upsert_only' THEN 'bidirectional only inserts missing rows, in every direction; upsert_only copies one node''s rows over the others.'
                          WHEN 'bidirectional+fix_nulls' THEN 'Run fix_nulls and bidirectional as two repairs.'
                          WHEN 'insert_only+upsert_only' THEN 'insert_only never updates; upsert_only inserts and updates. Pick one.'
                          ELSE 'fix_nulls only fills NULL columns of rows every node has; it never inserts, updates whole rows or deletes.' END;
        END IF;
    END LOOP;
    IF args->>'strategy' IS NOT NULL THEN
        IF args->>'strategy' <> 'latest_commit' THEN
            RAISE EXCEPTION 'unknown strategy "%"', args->>'strategy'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'The only strategy is latest_commit.';
        END IF;
        IF args->>'source_of_truth' IS NOT NULL THEN
            RAISE EXCEPTION 'strategy and source_of_truth cannot be combined'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'latest_commit picks the source for each row by its commit timestamp; give either a strategy or a source of truth.';
        END IF;
        IF (args->>'bidirectional')::boolean OR (args->>'fix_nulls')::boolean THEN
            RAISE EXCEPTION 'strategy cannot be combined with %', CASE WHEN (args->>'bidirectional')::boolean THEN 'bidirectional' ELSE 'fix_nulls' END
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSIF args->>'source_of_truth' IS NULL AND NOT (args->>'fix_nulls')::boolean AND NOT (args->>'bidirectional')::boolean THEN
        RAISE EXCEPTION 'source_of_truth is required'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the node whose rows are right (source_of_truth => ''n1''), or use strategy => ''latest_commit'', fix_nulls or bidirectional.';
    END IF;
END $$;

-- The privileges a repair with these options needs on the table.
CREATE FUNCTION ace.repair_privileges(args jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN (args->>'fix_nulls')::boolean THEN ARRAY['SELECT', 'UPDATE']
        WHEN (args->>'bidirectional')::boolean OR (args->>'insert_only')::boolean THEN ARRAY['SELECT', 'INSERT']
        WHEN (args->>'upsert_only')::boolean THEN ARRAY['SELECT', 'INSERT', 'UPDATE']
        ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'] END
$$;

---- Task validators (see migration 002).

CREATE FUNCTION ace.validate_table_repair(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    diff ace.tasks;
    diff_nodes text[];
    targets text[];
    unknown text[];
    tbl text;
    sot text;
    k text;
BEGIN
    diff := ace.completed_diff(args, 'repair');
    FOREACH k IN ARRAY ARRAY['dry_run', 'upsert_only', 'insert_only', 'bidirectional', 'fix_nulls', 'fire_triggers',
                             'generate_report', 'atomic'] LOOP
        args := args || jsonb_build_object(k, ace.bool_arg(args, k, false));
    END LOOP;
    args := args || jsonb_build_object('check_unchanged', ace.bool_arg(args, 'check_unchanged', true),
                                       'source_of_truth', ace.text_arg(args, 'source_of_truth'),
                                       'strategy', lower(ace.text_arg(args, 'strategy')));
    PERFORM ace.check_repair_options(args);
    tbl := ace.resolve_table(diff.result->>'table_name');
    IF ace.text_arg(args, 'table_name') IS NOT NULL AND ace.resolve_table(args->>'table_name') <> tbl THEN
        RAISE EXCEPTION 'diff task % is a diff of %, not of %', diff.task_id, tbl, args->>'table_name'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ace.check_privileges(tbl,
        CASE WHEN (args->>'dry_run')::boolean THEN ARRAY['SELECT'] ELSE ace.repair_privileges(args) END,
        'this repair needs');
    diff_nodes := ARRAY(SELECT jsonb_array_elements_text(diff.result->'nodes') ORDER BY 1);
    sot := args->>'source_of_truth';
    IF sot IS NOT NULL AND NOT sot = ANY(diff_nodes) THEN
        RAISE EXCEPTION 'source_of_truth % is not one of the diff''s nodes (%)', sot, array_to_string(diff_nodes, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF jsonb_typeof(args->'nodes') = 'array' AND jsonb_array_length(args->'nodes') > 0 THEN
        targets := ARRAY(SELECT DISTINCT btrim(n) FROM jsonb_array_elements_text(args->'nodes') n ORDER BY 1);
        SELECT array_agg(n ORDER BY n) INTO unknown FROM unnest(targets) n WHERE NOT n = ANY(diff_nodes);
        IF unknown IS NOT NULL THEN
            RAISE EXCEPTION 'node(s) % are not among the diff''s nodes (%)', array_to_string(unknown, ', '), array_to_string(diff_nodes, ', ')
                USING ERRCODE = 'invalid_parameter_value', HINT = 'nodes names the nodes to repair; leave it out to repair every node of the diff.';
        END IF;
        IF sot = ANY(targets) THEN
            RAISE EXCEPTION 'node % is the source of truth and cannot also be repaired', sot USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        targets := ARRAY(SELECT n FROM unnest(diff_nodes) n WHERE n IS DISTINCT FROM sot ORDER BY 1);
    END IF;
    SELECT array_agg(n ORDER BY n) INTO unknown FROM unnest(diff_nodes) n WHERE NOT EXISTS (SELECT 1 FROM ace.nodes x WHERE x.node_name = n);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'the diff''s node(s) % are not registered on this node any more', array_to_string(unknown, ', ')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Register them again with ace.add_node(name, conninfo).';
    END IF;
    IF (args->>'strategy') IS NOT NULL AND EXISTS (SELECT 1 FROM ace.diff_results d WHERE d.task_id = diff.task_id)
       AND NOT EXISTS (SELECT 1 FROM ace.diff_results d WHERE d.task_id = diff.task_id AND d.meta IS NOT NULL) THEN
        RAISE EXCEPTION 'the diff has no commit timestamps, which strategy latest_commit needs'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Set track_commit_timestamp = on on every node (it needs a restart), write or diff again, or name a source_of_truth.';
    END IF;
    RETURN jsonb_strip_nulls(args || jsonb_build_object(
        'diff_task', diff.task_id, 'table_name', tbl, 'nodes', to_jsonb(targets), 'diff_nodes', to_jsonb(diff_nodes)));
END $$;

CREATE FUNCTION ace.validate_table_rerun(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    diff ace.tasks;
    tbl text;
BEGIN
    diff := ace.completed_diff(args, 'recheck');
    tbl := ace.resolve_table(diff.result->>'table_name');
    IF ace.text_arg(args, 'table_name') IS NOT NULL AND ace.resolve_table(args->>'table_name') <> tbl THEN
        RAISE EXCEPTION 'diff task % is a diff of %, not of %', diff.task_id, tbl, args->>'table_name'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN jsonb_strip_nulls(args || jsonb_build_object(
        'diff_task', diff.task_id, 'table_name', tbl,
        'nodes', to_jsonb(ace.resolve_nodes(ARRAY(SELECT jsonb_array_elements_text(diff.result->'nodes')))),
        'table_filter', nullif(diff.result->>'table_filter', ''),
        'max_diff_rows', nullif((diff.result->>'max_diff_rows')::bigint, 0)));
END $$;

-- Checks an ACE diff file (args.diff) before the agent imports it: the table exists here with
-- the same primary key, and every node it names is registered.
CREATE FUNCTION ace.validate_diff_import(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    f jsonb := args->'diff';
    s jsonb := f->'summary';
    tbl text;
    nodes text[];
    pk text[];
    pair record;
BEGIN
    IF jsonb_typeof(f) IS DISTINCT FROM 'object' OR jsonb_typeof(f->'diffs') IS DISTINCT FROM 'object'
       OR jsonb_typeof(s) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'not an ACE diff file: it needs a "diffs" object and a "summary" object'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the JSON written by ACE''s table-diff or by ace-agent diff export.';
    END IF;
    IF s->>'schema' IS NULL OR s->>'table' IS NULL OR jsonb_typeof(s->'nodes') IS DISTINCT FROM 'array'
       OR jsonb_typeof(s->'primary_key') IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'the diff file''s summary lacks schema, table, nodes or primary_key' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    tbl := ace.resolve_table(format('%I.%I', s->>'schema', s->>'table'));
    nodes := ace.resolve_nodes(ARRAY(SELECT jsonb_array_elements_text(s->'nodes')));
    pk := ARRAY(SELECT a.attname::text FROM pg_index i JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord) ON true
                JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                WHERE i.indrelid = tbl::regclass AND i.indisprimary ORDER BY k.ord);
    IF pk <> ARRAY(SELECT jsonb_array_elements_text(s->'primary_key')) THEN
        RAISE EXCEPTION 'the diff file''s primary key (%) is not the primary key of % here (%)',
            (SELECT string_agg(x, ', ') FROM jsonb_array_elements_text(s->'primary_key') x), tbl, array_to_string(pk, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOR pair IN SELECT key, value FROM jsonb_each(f->'diffs') LOOP
        IF split_part(pair.key, '/', 1) <> ALL(nodes) OR split_part(pair.key, '/', 2) <> ALL(nodes)
           OR jsonb_typeof(pair.value->'rows') IS DISTINCT FROM 'object' THEN
            RAISE EXCEPTION 'the diff file''s entry "%" is not a pair of its nodes (%) with rows', pair.key, array_to_string(nodes, ', ')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END LOOP;
    RETURN args || jsonb_build_object('table_name', tbl, 'nodes', to_jsonb(nodes));
END $$;

---- The SQL API.

-- Imports an ACE diff file (its JSON) as a diff task; the agent stores its rows in
-- ace.diff_results. Repair or recheck it once it is COMPLETED.
CREATE FUNCTION ace.diff_import(diff jsonb, file_name text DEFAULT NULL) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('diff-import', jsonb_strip_nulls(jsonb_build_object('diff', diff, 'file_name', file_name)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

CREATE FUNCTION ace.table_repair(
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
    nodes text[] DEFAULT NULL
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('table-repair', jsonb_strip_nulls(jsonb_build_object(
        'diff_task', diff_task, 'source_of_truth', source_of_truth, 'dry_run', dry_run, 'upsert_only', upsert_only,
        'insert_only', insert_only, 'bidirectional', bidirectional, 'fix_nulls', fix_nulls, 'fire_triggers', fire_triggers,
        'generate_report', generate_report, 'strategy', strategy, 'atomic', atomic, 'check_unchanged', check_unchanged,
        'nodes', nodes)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

CREATE FUNCTION ace.table_rerun(diff_task uuid) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args) VALUES ('table-rerun', jsonb_build_object('diff_task', diff_task))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

-- What a repair did (or, in a dry run, would do) to each row on each node.
CREATE FUNCTION ace.repair_report(task_id uuid)
RETURNS TABLE (node text, action text, pk jsonb, source text, before jsonb, after jsonb, reason text, applied boolean, attempt int)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = repair_report.task_id) THEN
        RAISE EXCEPTION 'task % does not exist', task_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN QUERY SELECT a.node, a.action, a.pk, a.source, a.before, a.after, a.reason, a.applied, a.attempt
        FROM ace.repair_actions a WHERE a.task_id = repair_report.task_id ORDER BY a.node, a.pk_sort, a.row_no;
END $$;

-- A one-line account of a repair's result, for NOTICEs.
CREATE FUNCTION ace.describe_repair(result jsonb) RETURNS text
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
CREATE PROCEDURE ace.run_table_repair(
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
    nodes text[] DEFAULT NULL,
    INOUT task_id uuid DEFAULT NULL,
    INOUT status text DEFAULT NULL,
    INOUT summary jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
BEGIN
    task_id := ace.table_repair(diff_task, source_of_truth, dry_run, upsert_only, insert_only, bidirectional, fix_nulls,
                                fire_triggers, generate_report, strategy, atomic, check_unchanged, nodes);
    RAISE NOTICE 'submitted table-repair task %', task_id;
    COMMIT;
    CALL ace.follow_task(task_id, status, summary);
    IF status = 'COMPLETED' THEN
        RAISE NOTICE '%', ace.describe_repair(summary);
        RAISE NOTICE 'see what each node got with: SELECT * FROM ace.repair_report(''%'');', task_id;
    ELSE
        RAISE WARNING 'table-repair task % %: %', task_id, status, (SELECT x.error FROM ace.tasks x WHERE x.task_id = run_table_repair.task_id);
        RAISE NOTICE 'see what each node got with: SELECT * FROM ace.repair_report(''%'');', task_id;
    END IF;
END $$;

CREATE PROCEDURE ace.run_table_rerun(
    diff_task uuid,
    INOUT task_id uuid DEFAULT NULL,
    INOUT status text DEFAULT NULL,
    INOUT differing_rows bigint DEFAULT NULL,
    INOUT summary jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
BEGIN
    task_id := ace.table_rerun(diff_task);
    RAISE NOTICE 'submitted table-rerun task %', task_id;
    COMMIT;
    CALL ace.follow_task(task_id, status, summary);
    IF status = 'COMPLETED' THEN
        differing_rows := (summary->>'differing_keys')::bigint;
        IF differing_rows = 0 THEN
            RAISE NOTICE 'all previously reported differences have been resolved';
        ELSE
            RAISE NOTICE '%', ace.describe_diff(summary);
            RAISE NOTICE 'see the rows with: SELECT * FROM ace.diff_rows(''%''); repair them with ace.table_repair(''%'', ...)', task_id, task_id;
        END IF;
    ELSE
        RAISE WARNING 'table-rerun task % %: %', task_id, status, (SELECT x.error FROM ace.tasks x WHERE x.task_id = run_table_rerun.task_id);
    END IF;
END $$;
