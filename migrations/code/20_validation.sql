-- Validation: the helpers that check a task's arguments, and one validator per task type.
-- Each task type validates its own arguments in ace.validate_<type>(args jsonb) RETURNS jsonb,
-- which returns the normalised arguments or raises; ace.tasks_validate finds it by name, so a
-- new task type needs only its validator.

-- Resolves a table name to its quoted, schema-qualified form and checks that the submitting role
-- can diff it.
CREATE OR REPLACE FUNCTION ace.resolve_table(table_name text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    rel regclass;
    kind "char";
BEGIN
    IF table_name IS NULL OR btrim(table_name) = '' THEN
        RAISE EXCEPTION 'table_name is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        rel := to_regclass(table_name);
    EXCEPTION WHEN invalid_name OR syntax_error THEN
        RAISE EXCEPTION 'invalid table name "%"', table_name
            USING ERRCODE = 'invalid_name', HINT = 'Write it as schema.table; quote mixed-case names: public."Orders".';
    END;
    IF rel IS NULL THEN
        RAISE EXCEPTION 'table "%" does not exist on this node', table_name
            USING ERRCODE = 'undefined_table', HINT = 'Check the name and the schema, for example public.orders.';
    END IF;
    SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = rel;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', table_name USING ERRCODE = 'wrong_object_type';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = rel AND i.indisprimary) THEN
        RAISE EXCEPTION 'table % has no primary key', rel::text
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'ace-agent compares rows by primary key; add one with ALTER TABLE ... ADD PRIMARY KEY.';
    END IF;
    IF NOT has_table_privilege(current_user, rel, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied: role % cannot read table %', current_user, rel::text
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN format('%I.%I', (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel),
                           (SELECT c.relname FROM pg_class c WHERE c.oid = rel));
END $$;

-- Checks nodes a caller named: each must be registered, and none marked down (a joining node
-- may be named). The one check of named nodes, for every task type.
CREATE OR REPLACE FUNCTION ace.check_named_nodes(nodes text[]) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    unknown text[];
    down ace.nodes;
BEGIN
    SELECT array_agg(n ORDER BY n) INTO unknown
        FROM unnest(nodes) n WHERE NOT EXISTS (SELECT 1 FROM ace.nodes x WHERE x.node_name = n);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown node(s): %', array_to_string(unknown, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Registered nodes are listed in ace.nodes; add one with ace.add_node(name, conninfo).';
    END IF;
    SELECT * INTO down FROM ace.nodes x WHERE x.node_name = ANY (nodes) AND x.state = 'down' ORDER BY x.node_name LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'node % is marked down (%); mark it up with ace.mark_node_up(%) or leave it out',
            down.node_name, coalesce(down.state_reason, 'no reason given'), quote_literal(down.node_name)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'SELECT node_name, state, state_reason FROM ace.nodes shows every node''s state.';
    END IF;
END $$;

-- The nodes a repair will write. Named targets are checked as any named node (a down one is
-- refused). Default targets (every node of the diff but the source of truth) leave out the nodes
-- marked down since the diff, with a NOTICE, because nothing can be written there; the diff's
-- rows for them stay, for their resync. A repair with no live node left to write is refused.
CREATE OR REPLACE FUNCTION ace.repair_targets(targets text[], named boolean) RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    left_out text;
BEGIN
    IF named THEN
        PERFORM ace.check_named_nodes(targets);
        RETURN targets;
    END IF;
    SELECT string_agg(format('%s (down%s)', n.node_name, ': ' || n.state_reason), ', ' ORDER BY n.node_name)
        INTO left_out FROM ace.nodes n WHERE n.node_name = ANY (targets) AND n.state = 'down';
    IF left_out IS NULL THEN
        RETURN targets;
    END IF;
    targets := ARRAY(SELECT t FROM unnest(targets) t
                     WHERE NOT EXISTS (SELECT 1 FROM ace.nodes n WHERE n.node_name = t AND n.state = 'down') ORDER BY 1);
    IF cardinality(targets) = 0 THEN
        RAISE EXCEPTION 'every node this repair would write is marked down: %', left_out
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Mark a node up with ace.mark_node_up(node) once it is back (resync => true repairs it then).';
    END IF;
    RAISE NOTICE 'nodes left out of the repair: %', left_out
        USING HINT = 'A down node is not written; when it is back, ace.mark_node_up(node, resync => true) repairs it.';
    RETURN targets;
END $$;

-- The default nodes of a task: the active ones, by name. A NOTICE names those left out (down or
-- joining), so that a caller sees what the task will not look at.
CREATE OR REPLACE FUNCTION ace.default_nodes() RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    left_out text;
BEGIN
    SELECT string_agg(format('%s (%s%s)', n.node_name, n.state, ': ' || n.state_reason), ', ' ORDER BY n.node_name)
        INTO left_out FROM ace.nodes n WHERE n.state <> 'active';
    IF left_out IS NOT NULL THEN
        RAISE NOTICE 'nodes left out: %', left_out
            USING HINT = 'Only active nodes take part by default; name a joining node to include it.';
    END IF;
    RETURN (SELECT coalesce(array_agg(n.node_name ORDER BY n.node_name), '{}') FROM ace.nodes n WHERE n.state = 'active');
END $$;

-- Expands NULL (or 'all') to the default nodes, drops duplicates, and checks named nodes.
CREATE OR REPLACE FUNCTION ace.resolve_nodes(nodes text[]) RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    resolved text[];
BEGIN
    IF nodes IS NULL OR cardinality(nodes) = 0 OR nodes = ARRAY['all'] THEN
        resolved := ace.default_nodes();
    ELSE
        SELECT array_agg(DISTINCT btrim(n) ORDER BY btrim(n)) INTO resolved FROM unnest(nodes) n;
        PERFORM ace.check_named_nodes(resolved);
    END IF;
    IF cardinality(resolved) < 2 THEN
        RAISE EXCEPTION 'a diff needs at least 2 nodes, got %', coalesce(nullif(array_to_string(resolved, ', '), ''), 'none')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Register the cluster''s nodes with ace.add_node(name, conninfo) on this node; SELECT node_name, state FROM ace.nodes shows which are active.';
    END IF;
    RETURN resolved;
END $$;

-- Reads the nodes argument of a task: a JSON array of node names, or (as ACE's command line and
-- REST API take it) a string, "all" or a comma-separated list. Absent or null means every node.
-- Anything else is refused rather than read as "all".
CREATE OR REPLACE FUNCTION ace.nodes_arg(args jsonb) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    CASE coalesce(jsonb_typeof(args->'nodes'), 'null')
        WHEN 'null' THEN RETURN NULL;
        WHEN 'array' THEN
            IF EXISTS (SELECT 1 FROM jsonb_array_elements(args->'nodes') e WHERE jsonb_typeof(e) <> 'string') THEN
                RAISE EXCEPTION 'nodes must be node names, got %', args->'nodes' USING ERRCODE = 'invalid_parameter_value';
            END IF;
            RETURN ARRAY(SELECT jsonb_array_elements_text(args->'nodes'));
        WHEN 'string' THEN
            RETURN ARRAY(SELECT btrim(n) FROM unnest(string_to_array(args->>'nodes', ',')) n WHERE btrim(n) <> '');
        ELSE
            RAISE EXCEPTION 'nodes must be an array of node names, or "all", got %', args->'nodes'
                USING ERRCODE = 'invalid_parameter_value';
    END CASE;
END $$;

CREATE OR REPLACE FUNCTION ace.check_positive(args jsonb, key text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF args ? key AND args->key <> 'null'::jsonb THEN
        IF jsonb_typeof(args->key) <> 'number' OR (args->>key)::numeric <= 0 OR (args->>key)::numeric <> trunc((args->>key)::numeric) THEN
            RAISE EXCEPTION '% must be a positive integer, got %', key, args->key USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
END $$;

-- Guardrails on the block size, as ACE's table_diff.min/max_diff_block_size; override_block_size
-- lifts them.
CREATE OR REPLACE FUNCTION ace.check_range(args jsonb, key text, lo numeric, hi numeric, hint text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF args ? key AND args->key <> 'null'::jsonb
       AND (jsonb_typeof(args->key) <> 'number' OR (args->>key)::numeric < lo OR (args->>key)::numeric > hi) THEN
        RAISE EXCEPTION '% must be between % and %, got %', key, lo, hi, args->key
            USING ERRCODE = 'invalid_parameter_value', HINT = coalesce(hint, '');
    END IF;
END $$;

-- Reads a boolean argument (absent or null means dflt) and stores it back normalised.
CREATE OR REPLACE FUNCTION ace.bool_arg(args jsonb, key text, dflt boolean) RETURNS boolean
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
CREATE OR REPLACE FUNCTION ace.text_arg(args jsonb, key text) RETURNS text
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
CREATE OR REPLACE FUNCTION ace.completed_diff(args jsonb, purpose text) RETURNS ace.tasks
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
    IF t.task_type NOT IN ('table-diff', 'table-rerun', 'diff-import', 'mtree-diff') THEN
        RAISE EXCEPTION 'task % is a % task, not a diff', id, t.task_type
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Give the id of a table-diff, mtree-diff, table-rerun or diff-import task.';
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
CREATE OR REPLACE FUNCTION ace.check_privileges(tbl text, privs text[], purpose text) RETURNS void
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
CREATE OR REPLACE FUNCTION ace.check_repair_options(args jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    conflicting text;
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
        IF args->>'strategy' NOT IN ('latest_commit', 'majority') THEN
            RAISE EXCEPTION 'unknown strategy "%"', args->>'strategy'
                USING ERRCODE = 'invalid_parameter_value', HINT = 'The strategies are latest_commit and majority.';
        END IF;
        IF args->>'source_of_truth' IS NOT NULL THEN
            RAISE EXCEPTION 'strategy and source_of_truth cannot be combined'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'latest_commit picks the source for each row by its commit timestamp, majority by the nodes'' vote; give either a strategy or a source of truth.';
        END IF;
        IF (args->>'bidirectional')::boolean OR (args->>'fix_nulls')::boolean THEN
            RAISE EXCEPTION 'strategy cannot be combined with %', CASE WHEN (args->>'bidirectional')::boolean THEN 'bidirectional' ELSE 'fix_nulls' END
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSIF args->>'source_of_truth' IS NULL AND NOT (args->>'fix_nulls')::boolean AND NOT (args->>'bidirectional')::boolean
          AND NOT args ? 'plan' AND NOT coalesce((args->>'recovery_mode')::boolean, false) THEN
        RAISE EXCEPTION 'source_of_truth is required'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the node whose rows are right (source_of_truth => ''n1''), or use strategy => ''latest_commit'' or ''majority'', fix_nulls, bidirectional or a repair plan.';
    END IF;
    -- A plan decides every row itself (ACE: not with --fix-nulls or --bidirectional); the other
    -- deciding options would say something else about the same rows.
    IF args ? 'plan' THEN
        SELECT k INTO conflicting FROM unnest(ARRAY['source_of_truth', 'strategy', 'bidirectional', 'fix_nulls', 'insert_only', 'upsert_only']) k
        WHERE coalesce(args->>k, 'false') NOT IN ('false', '') LIMIT 1;
        IF conflicting IS NOT NULL THEN
            RAISE EXCEPTION 'a repair plan cannot be combined with %', conflicting USING ERRCODE = 'invalid_parameter_value',
                HINT = 'The plan''s rules decide every row (apply_from with mode insert or upsert, keep, skip, ...): say it there.';
        END IF;
    END IF;
END $$;

-- A diff scoped to one origin (against_origin) or to commits before a time (until) saw only part
-- of the table: the rows it did not see are not "in sync", and repairing from it as from a
-- whole-table diff would be a trap (ACE does not guard it). Such a diff is repaired only in
-- recovery_mode, which says the user means a recovery after a node failed.
CREATE OR REPLACE FUNCTION ace.check_recovery(args jsonb, diff jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    scope text := concat_ws(' and ',
        CASE WHEN coalesce(diff->>'against_origin', '') <> '' THEN format('against_origin => %L', diff->>'against_origin') END,
        CASE WHEN diff->>'until' IS NOT NULL THEN format('until => %L', diff->>'until') END);
BEGIN
    IF scope <> '' AND NOT (args->>'recovery_mode')::boolean THEN
        RAISE EXCEPTION 'the diff was made with %, so it saw only part of the table: it is repaired only with recovery_mode => true', scope
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'To recover from a failed node, repair with recovery_mode => true (it picks the survivor that received the most from the failed node unless you name a source_of_truth); to repair the whole table, diff it again without against_origin and until.';
    END IF;
    -- Without anything else deciding the rows, recovery_mode picks the source of truth: the
    -- survivor that received the most from the failed node, the diff's against_origin.
    IF (args->>'recovery_mode')::boolean AND args->>'source_of_truth' IS NULL AND args->>'strategy' IS NULL
       AND NOT (args ? 'plan' OR args ? 'repair_plan') AND NOT (args->>'fix_nulls')::boolean
       AND NOT (args->>'bidirectional')::boolean AND coalesce(diff->>'against_origin', '') = '' THEN
        RAISE EXCEPTION 'recovery_mode without a source_of_truth picks the survivor that received the most from the failed node, and this diff names no failed node (it was made without against_origin)'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Name the node whose rows are right (source_of_truth => ''n2''), or diff again with against_origin => ''<failed node>''.';
    END IF;
    -- preserve_origin commits each commit timestamp's rows on their own, under the failed node's
    -- origin: a repair of every node or none cannot be made of many commits.
    IF (args->>'preserve_origin')::boolean THEN
        IF (args->>'atomic')::boolean THEN
            RAISE EXCEPTION 'preserve_origin and atomic cannot be combined'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'preserve_origin commits the rows of each original commit timestamp in a transaction of its own, so the repair cannot be one two-phase commit; leave out one of them.';
        END IF;
        IF coalesce(diff->>'against_origin', '') = '' THEN
            RAISE EXCEPTION 'preserve_origin keeps the failed node''s origin on the repaired rows, and this diff names no failed node (it was made without against_origin)'
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Diff again with against_origin => ''<failed node>'' and recovery_mode => true, or repair without preserve_origin.';
        END IF;
    END IF;
END $$;

-- The privileges a repair with these options needs on the table.
CREATE OR REPLACE FUNCTION ace.repair_privileges(args jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN (args->>'fix_nulls')::boolean THEN ARRAY['SELECT', 'UPDATE']
        WHEN (args->>'bidirectional')::boolean OR (args->>'insert_only')::boolean THEN ARRAY['SELECT', 'INSERT']
        WHEN (args->>'upsert_only')::boolean THEN ARRAY['SELECT', 'INSERT', 'UPDATE']
        ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'] END
$$;

-- table-diff's columns option, normalised: NULL when absent or empty, else the distinct names in
-- the order given, each a column of the table here (args->>'table_name', resolved); unknown
-- names are refused, all of them named. The key is always compared, so naming it is allowed.
CREATE OR REPLACE FUNCTION ace.columns_arg(args jsonb) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    names text[];
    unknown text[];
BEGIN
    IF args->'columns' IS NULL OR args->'columns' = 'null'::jsonb THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(args->'columns') <> 'array' OR EXISTS (
        SELECT 1 FROM jsonb_array_elements(args->'columns') e WHERE jsonb_typeof(e) <> 'string' OR btrim(e #>> '{}') = '') THEN
        RAISE EXCEPTION 'columns must be a list of column names, got %', args->'columns'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'For example columns => ARRAY[''status'', ''amount''].';
    END IF;
    SELECT array_agg(n ORDER BY first) INTO names
    FROM (SELECT e AS n, min(o) AS first FROM jsonb_array_elements_text(args->'columns') WITH ORDINALITY x(e, o) GROUP BY e) d;
    IF names IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(n ORDER BY n) INTO unknown FROM unnest(names) n
    WHERE NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = (args->>'table_name')::regclass
                        AND a.attname = n AND a.attnum > 0 AND NOT a.attisdropped);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'table % has no column %', args->>'table_name',
                        (SELECT string_agg(format('%I', u), ', ') FROM unnest(unknown) u)
            USING ERRCODE = 'undefined_column',
                  HINT = 'Its columns: ' || (SELECT string_agg(format('%I', a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
                                             WHERE a.attrelid = (args->>'table_name')::regclass AND a.attnum > 0 AND NOT a.attisdropped)
                         || '. Name them as they are spelt, without quotes.';
    END IF;
    RETURN to_jsonb(names);
END $$;

CREATE OR REPLACE FUNCTION ace.validate_table_diff(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    key_name text;
BEGIN
    args := args
        || jsonb_build_object('table_name', ace.resolve_table(args->>'table_name'))
        || jsonb_build_object('nodes', to_jsonb(ace.resolve_nodes(ace.nodes_arg(args))));
    -- Flags and text options are normalised as every validator does: booleans by ace.bool_arg
    -- (absent means the documented default), text by ace.text_arg ('' means absent).
    args := args || jsonb_build_object('override_block_size', ace.bool_arg(args, 'override_block_size', false));
    FOREACH key_name IN ARRAY ARRAY['table_filter', 'against_origin', 'output', 'until'] LOOP
        args := args || jsonb_build_object(key_name, ace.text_arg(args, key_name));
    END LOOP;
    PERFORM ace.check_positive(args, k) FROM unnest(ARRAY['block_size', 'max_diff_rows', 'compare_unit_size']) k;
    IF NOT (args->>'override_block_size')::boolean THEN
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
    args := args || jsonb_build_object('columns', ace.columns_arg(args));
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
    RETURN jsonb_strip_nulls(args);
END $$;

CREATE OR REPLACE FUNCTION ace.validate_table_repair(args jsonb) RETURNS jsonb
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
    -- nodes means the nodes to compare, an option of diffs; a repair names the nodes it changes
    -- target_nodes. Refused rather than ignored, so a repair never changes more nodes than asked.
    IF args ? 'nodes' THEN
        RAISE EXCEPTION 'table-repair has no option nodes' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Name the nodes to repair with target_nodes; the diff''s nodes are its own.';
    END IF;
    diff := ace.completed_diff(args, 'repair');
    IF jsonb_typeof(diff.result->'compare_columns') = 'array' THEN
        RAISE EXCEPTION 'diff task % compared only the columns % (and the key), so its rows are not whole rows to repair from',
                        diff.task_id, (SELECT string_agg(c, ', ') FROM jsonb_array_elements_text(diff.result->'compare_columns') c)
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Run ace.table_diff(%L) without columns and repair that diff.', diff.result->>'table_name');
    END IF;
    FOREACH k IN ARRAY ARRAY['dry_run', 'upsert_only', 'insert_only', 'bidirectional', 'fix_nulls', 'fire_triggers',
                             'generate_report', 'atomic', 'recovery_mode', 'preserve_origin'] LOOP
        args := args || jsonb_build_object(k, ace.bool_arg(args, k, false));
    END LOOP;
    args := args || jsonb_build_object('check_unchanged', ace.bool_arg(args, 'check_unchanged', true),
                                       'source_of_truth', ace.text_arg(args, 'source_of_truth'),
                                       'strategy', lower(ace.text_arg(args, 'strategy')));
    PERFORM ace.check_recovery(args, diff.result);
    tbl := ace.resolve_table(diff.result->>'table_name');
    args := args - 'plan' || jsonb_strip_nulls(jsonb_build_object('plan', ace.repair_plan_arg(args, tbl),
                                                                   'repair_plan', ace.text_arg(args, 'repair_plan')));
    PERFORM ace.check_repair_options(args);
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
    IF sot IS NOT NULL THEN
        PERFORM ace.check_named_nodes(ARRAY[sot]); -- its rows are read again at the repair
    END IF;
    IF jsonb_typeof(args->'target_nodes') = 'array' AND jsonb_array_length(args->'target_nodes') > 0 THEN
        targets := ARRAY(SELECT DISTINCT btrim(n) FROM jsonb_array_elements_text(args->'target_nodes') n ORDER BY 1);
        SELECT array_agg(n ORDER BY n) INTO unknown FROM unnest(targets) n WHERE NOT n = ANY(diff_nodes);
        IF unknown IS NOT NULL THEN
            RAISE EXCEPTION 'node(s) % are not among the diff''s nodes (%)', array_to_string(unknown, ', '), array_to_string(diff_nodes, ', ')
                USING ERRCODE = 'invalid_parameter_value', HINT = 'target_nodes names the nodes to repair; leave it out to repair every node of the diff.';
        END IF;
        IF sot = ANY(targets) THEN
            RAISE EXCEPTION 'node % is the source of truth and cannot also be repaired', sot USING ERRCODE = 'invalid_parameter_value';
        END IF;
        targets := ace.repair_targets(targets, true);
    ELSE
        targets := ace.repair_targets(ARRAY(SELECT n FROM unnest(diff_nodes) n WHERE n IS DISTINCT FROM sot ORDER BY 1), false);
    END IF;
    SELECT array_agg(n ORDER BY n) INTO unknown FROM unnest(diff_nodes) n WHERE NOT EXISTS (SELECT 1 FROM ace.nodes x WHERE x.node_name = n);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'the diff''s node(s) % are not registered on this node any more', array_to_string(unknown, ', ')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Register them again with ace.add_node(name, conninfo).';
    END IF;
    PERFORM ace.check_majority(args, diff_nodes);
    IF (args->>'strategy') = 'latest_commit' AND EXISTS (SELECT 1 FROM ace.diff_results d WHERE d.task_id = diff.task_id)
       AND NOT EXISTS (SELECT 1 FROM ace.diff_results d WHERE d.task_id = diff.task_id AND d.meta IS NOT NULL) THEN
        RAISE EXCEPTION 'the diff has no commit timestamps, which strategy latest_commit needs'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Set track_commit_timestamp = on on every node (it needs a restart), write or diff again, or name a source_of_truth.';
    END IF;
    RETURN jsonb_strip_nulls(args || jsonb_build_object(
        'diff_task', diff.task_id, 'table_name', tbl, 'target_nodes', to_jsonb(targets), 'diff_nodes', to_jsonb(diff_nodes)));
END $$;

CREATE OR REPLACE FUNCTION ace.validate_table_rerun(args jsonb) RETURNS jsonb
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
        'max_diff_rows', nullif((diff.result->>'max_diff_rows')::bigint, 0),
        'columns', diff.result->'compare_columns'));
END $$;

-- Checks an ACE diff file (args.diff) before the agent imports it: the table exists here with
-- the same primary key, and every node it names is registered.
CREATE OR REPLACE FUNCTION ace.validate_diff_import(args jsonb) RETURNS jsonb
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
