-- Repair plans (issue 20): ACE's repair-plan format, read and normalised in SQL, and stored per
-- owner in ace.repair_plans. The errors are ACE's, prefixed "invalid repair plan: ". What a plan
-- decides for each row is the engine's (engine/repair/planrules.go); who a side name means
-- (ACE's positional n1/n2, or a node's name) is decided there too, against the diff's nodes.

-- Raises a plan error: ACE's text, with a pointer to the format.
CREATE OR REPLACE FUNCTION ace.repair_plan_error(msg text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RAISE EXCEPTION 'invalid repair plan: %', msg USING ERRCODE = 'invalid_parameter_value',
        HINT = 'See "Repair plans" in docs/repair.md for the format (ACE''s, with node names wherever a side is named).';
END $$;

-- Refuses keys a plan object may not have: a misspelt selector or option must not be ignored.
CREATE OR REPLACE FUNCTION ace.repair_plan_keys(obj jsonb, allowed text[], location text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k text;
BEGIN
    SELECT key INTO k FROM jsonb_object_keys(obj) key WHERE NOT key = ANY(allowed) ORDER BY 1 LIMIT 1;
    IF k IS NOT NULL THEN
        PERFORM ace.repair_plan_error(format('%s: unknown key "%s" (known: %s)', location, k, array_to_string(allowed, ', ')));
    END IF;
END $$;

-- Checks one action and returns it normalised (apply_from's mode filled in). tbl and location
-- name it in errors as ACE does: "table <t> <location>: ...".
CREATE OR REPLACE FUNCTION ace.normalize_repair_plan_action(action jsonb, tbl text, location text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    prefix text := format('table %s %s', tbl, location);
    typ text;
    helpers jsonb;
    fresh jsonb;
BEGIN
    IF jsonb_typeof(action) IS DISTINCT FROM 'object' THEN
        PERFORM ace.repair_plan_error(prefix || ' action cannot be nil');
    END IF;
    PERFORM ace.repair_plan_keys(action, ARRAY['type', 'node', 'from', 'mode', 'custom_row', 'helpers', 'allow_stale_repairs'], prefix);
    typ := CASE WHEN jsonb_typeof(action->'type') = 'string' THEN action->>'type' END;
    IF action ? 'allow_stale_repairs' AND jsonb_typeof(action->'allow_stale_repairs') <> 'boolean' THEN
        PERFORM ace.repair_plan_error(prefix || ': allow_stale_repairs must be true or false');
    END IF;
    CASE typ
    WHEN 'keep_n1', 'keep_n2', 'bidirectional', 'skip', 'delete' THEN
        NULL;
    WHEN 'keep' THEN
        IF jsonb_typeof(action->'node') IS DISTINCT FROM 'string' OR btrim(action->>'node') = '' THEN
            PERFORM ace.repair_plan_error(prefix || ': keep requires ''node'' (the name of the node whose row wins)');
        END IF;
    WHEN 'apply_from' THEN
        IF jsonb_typeof(action->'from') IS DISTINCT FROM 'string' OR btrim(action->>'from') = '' THEN
            PERFORM ace.repair_plan_error(prefix || ': apply_from requires ''from'' (n1 or n2)');
        END IF;
        IF coalesce(action->>'mode', '') = '' THEN
            action := action || '{"mode": "replace"}';
        ELSIF NOT action->>'mode' IN ('replace', 'upsert', 'insert') THEN
            PERFORM ace.repair_plan_error(prefix || ': apply_from mode must be one of replace|upsert|insert');
        END IF;
    WHEN 'custom' THEN
        helpers := action->'helpers';
        IF (jsonb_typeof(action->'custom_row') IS DISTINCT FROM 'object' OR action->'custom_row' = '{}')
           AND jsonb_typeof(helpers) IS DISTINCT FROM 'object' THEN
            PERFORM ace.repair_plan_error(prefix || ': custom requires custom_row or helpers');
        END IF;
        IF jsonb_typeof(helpers) = 'object' THEN
            PERFORM ace.repair_plan_keys(helpers, ARRAY['coalesce_priority', 'pick_freshest'], prefix || ' helpers');
            IF helpers ? 'coalesce_priority' AND (jsonb_typeof(helpers->'coalesce_priority') <> 'array'
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(helpers->'coalesce_priority') e
                          WHERE jsonb_typeof(e) <> 'string' OR btrim(e #>> '{}') = '')) THEN
                PERFORM ace.repair_plan_error(prefix || ': coalesce_priority entries must be n1 or n2 (or a node''s name)');
            END IF;
            fresh := helpers->'pick_freshest';
            IF fresh IS NOT NULL THEN
                IF jsonb_typeof(fresh) <> 'object' OR jsonb_typeof(fresh->'key') IS DISTINCT FROM 'string' OR btrim(fresh->>'key') = '' THEN
                    PERFORM ace.repair_plan_error(prefix || ': pick_freshest requires key');
                END IF;
                PERFORM ace.repair_plan_keys(fresh, ARRAY['key', 'tie'], prefix || ' pick_freshest');
                IF fresh ? 'tie' AND (jsonb_typeof(fresh->'tie') <> 'string' OR btrim(fresh->>'tie') = '') THEN
                    PERFORM ace.repair_plan_error(prefix || ': pick_freshest.tie must be n1 or n2 (or a node''s name)');
                END IF;
            END IF;
        END IF;
    ELSE
        PERFORM ace.repair_plan_error(format('%s: unsupported action type "%s"', prefix, coalesce(typ, action->>'type', '')));
    END CASE;
    RETURN action;
END $$;

-- The side an action copies from, if it names one: keep_n1 -> n1, keep -> its node,
-- apply_from -> its from.
CREATE OR REPLACE FUNCTION ace.repair_plan_action_side(action jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE action->>'type' WHEN 'keep_n1' THEN 'n1' WHEN 'keep_n2' THEN 'n2' WHEN 'keep' THEN action->>'node'
                                WHEN 'apply_from' THEN action->>'from' END
$$;

-- Checks one rule (the i-th, from 0) and returns it normalised: named (rule_<i> when it has no
-- name), diff_type as a list.
CREATE OR REPLACE FUNCTION ace.normalize_repair_plan_rule(rule jsonb, i int, tbl text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    label text;
    m jsonb;
    j int;
    dt text;
    side text;
BEGIN
    IF jsonb_typeof(rule) IS DISTINCT FROM 'object' THEN
        PERFORM ace.repair_plan_error(format('table %s rule[%s] must be an object', tbl, i));
    END IF;
    label := CASE WHEN coalesce(btrim(rule->>'name'), '') <> '' THEN format(' (%s)', btrim(rule->>'name')) ELSE '' END;
    PERFORM ace.repair_plan_keys(rule, ARRAY['name', 'pk_in', 'diff_type', 'columns_changed', 'when', 'action'],
                                 format('table %s rule[%s]%s', tbl, i, label));
    IF jsonb_typeof(rule->'diff_type') = 'string' THEN
        rule := jsonb_set(rule, '{diff_type}', jsonb_build_array(rule->'diff_type'));
    END IF;
    IF coalesce(jsonb_array_length(CASE WHEN jsonb_typeof(rule->'pk_in') = 'array' THEN rule->'pk_in' END), 0) = 0
       AND coalesce(jsonb_array_length(CASE WHEN jsonb_typeof(rule->'diff_type') = 'array' THEN rule->'diff_type' END), 0) = 0
       AND coalesce(jsonb_array_length(CASE WHEN jsonb_typeof(rule->'columns_changed') = 'array' THEN rule->'columns_changed' END), 0) = 0
       AND coalesce(btrim(CASE WHEN jsonb_typeof(rule->'when') = 'string' THEN rule->>'when' END), '') = '' THEN
        PERFORM ace.repair_plan_error(format('table %s rule[%s]%s must specify at least one selector (pk_in, diff_type, columns_changed, when)',
                                             tbl, i, label));
    END IF;
    FOR m, j IN SELECT e, (o - 1)::int FROM jsonb_array_elements(coalesce(rule->'pk_in', '[]')) WITH ORDINALITY x(e, o) LOOP
        IF jsonb_typeof(m) IS DISTINCT FROM 'object'
           OR (coalesce(jsonb_array_length(CASE WHEN jsonb_typeof(m->'equals') = 'array' THEN m->'equals' END), 0) = 0
               AND jsonb_typeof(m->'range') IS DISTINCT FROM 'object') THEN
            PERFORM ace.repair_plan_error(format('table %s rule%s pk_in[%s] must specify equals or range', tbl, label, j));
        END IF;
        IF jsonb_typeof(m->'range') = 'object' AND (coalesce(m->'range'->'from', 'null') = 'null' OR coalesce(m->'range'->'to', 'null') = 'null') THEN
            PERFORM ace.repair_plan_error(format('table %s rule%s pk_in[%s] range requires both from and to', tbl, label, j));
        END IF;
    END LOOP;
    IF rule ? 'diff_type' AND jsonb_typeof(rule->'diff_type') <> 'array' THEN
        PERFORM ace.repair_plan_error(format('table %s rule%s diff_type must be a list', tbl, label));
    END IF;
    FOR dt, j IN SELECT e #>> '{}', (o - 1)::int FROM jsonb_array_elements(coalesce(rule->'diff_type', '[]')) WITH ORDINALITY x(e, o) LOOP
        IF coalesce(btrim(dt), '') = '' THEN
            PERFORM ace.repair_plan_error(format('table %s rule%s diff_type[%s] cannot be empty', tbl, label, j));
        END IF;
        IF dt <> 'row_mismatch' AND dt !~ '^(missing|deleted)_on_.+$' THEN
            PERFORM ace.repair_plan_error(format('table %s rule%s diff_type[%s] must be one of [row_mismatch missing_on_n1 missing_on_n2 deleted_on_n1 deleted_on_n2] (or missing_on_<node name>)',
                                                 tbl, label, j));
        END IF;
    END LOOP;
    IF rule ? 'columns_changed' AND (jsonb_typeof(rule->'columns_changed') <> 'array'
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(rule->'columns_changed') e WHERE jsonb_typeof(e) <> 'string')) THEN
        PERFORM ace.repair_plan_error(format('table %s rule%s columns_changed must be a list of column names', tbl, label));
    END IF;
    IF rule ? 'when' AND jsonb_typeof(rule->'when') <> 'string' THEN
        PERFORM ace.repair_plan_error(format('table %s rule%s: invalid when expression: it must be a string', tbl, label));
    END IF;
    rule := jsonb_set(rule, '{action}', ace.normalize_repair_plan_action(rule->'action', tbl, 'rule' || label));
    side := ace.repair_plan_action_side(rule->'action');
    FOR dt IN SELECT e #>> '{}' FROM jsonb_array_elements(coalesce(rule->'diff_type', '[]')) e LOOP
        IF side IS NOT NULL AND dt IN ('missing_on_' || side, 'deleted_on_' || side) THEN
            PERFORM ace.repair_plan_error(format('table %s rule%s: %s incompatible with diff_type %s', tbl, label,
                CASE rule->'action'->>'type' WHEN 'keep_n1' THEN 'keep_n1' WHEN 'keep_n2' THEN 'keep_n2'
                     ELSE (rule->'action'->>'type') || ' ' || side END, dt));
        END IF;
        IF dt = 'row_mismatch' AND rule->'action'->>'type' = 'apply_from' AND rule->'action'->>'mode' = 'insert' THEN
            PERFORM ace.repair_plan_error(format('table %s rule%s: apply_from insert incompatible with diff_type %s', tbl, label, dt));
        END IF;
    END LOOP;
    IF coalesce(btrim(rule->>'name'), '') = '' THEN
        rule := rule || jsonb_build_object('name', 'rule_' || i);
    END IF;
    RETURN rule;
END $$;

-- Checks a table's plan and returns it normalised.
CREATE OR REPLACE FUNCTION ace.normalize_repair_table_plan(tp jsonb, tbl text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    rules jsonb := '[]';
    overrides jsonb := '[]';
    x jsonb;
    i int;
BEGIN
    IF jsonb_typeof(tp) IS DISTINCT FROM 'object' THEN
        PERFORM ace.repair_plan_error(format('table %s: its plan must be an object (default_action, rules, row_overrides)', tbl));
    END IF;
    PERFORM ace.repair_plan_keys(tp, ARRAY['default_action', 'rules', 'row_overrides'], 'table ' || tbl);
    IF tp ? 'default_action' AND tp->'default_action' <> 'null' THEN
        tp := jsonb_set(tp, '{default_action}', ace.normalize_repair_plan_action(tp->'default_action', tbl, 'table.default_action'));
    END IF;
    FOR x, i IN SELECT e, (o - 1)::int FROM jsonb_array_elements(CASE WHEN jsonb_typeof(tp->'row_overrides') = 'array' THEN tp->'row_overrides' ELSE '[]' END)
                WITH ORDINALITY y(e, o) LOOP
        IF jsonb_typeof(x) IS DISTINCT FROM 'object' OR jsonb_typeof(x->'pk') IS DISTINCT FROM 'object' OR x->'pk' = '{}' THEN
            PERFORM ace.repair_plan_error(format('table %s row_override[%s] must provide pk map', tbl, i));
        END IF;
        PERFORM ace.repair_plan_keys(x, ARRAY['name', 'pk', 'action'], format('table %s row_override[%s]', tbl, i));
        x := jsonb_set(x, '{action}', ace.normalize_repair_plan_action(x->'action', tbl, format('row_override[%s]', i)));
        IF coalesce(btrim(x->>'name'), '') = '' THEN
            x := x || jsonb_build_object('name', 'row_override_' || i);
        END IF;
        overrides := overrides || jsonb_build_array(x);
    END LOOP;
    FOR x, i IN SELECT e, (o - 1)::int FROM jsonb_array_elements(CASE WHEN jsonb_typeof(tp->'rules') = 'array' THEN tp->'rules' ELSE '[]' END)
                WITH ORDINALITY y(e, o) LOOP
        rules := rules || jsonb_build_array(ace.normalize_repair_plan_rule(x, i, tbl));
    END LOOP;
    IF (tp ? 'rules' AND jsonb_typeof(tp->'rules') NOT IN ('array', 'null'))
       OR (tp ? 'row_overrides' AND jsonb_typeof(tp->'row_overrides') NOT IN ('array', 'null')) THEN
        PERFORM ace.repair_plan_error(format('table %s: rules and row_overrides must be lists', tbl));
    END IF;
    RETURN jsonb_strip_nulls(tp || jsonb_build_object('rules', rules, 'row_overrides', overrides));
END $$;

-- Checks that a table's plan names only the table's columns: columns_changed, a row override's
-- key, a custom row's columns and pick_freshest's key (a column, or commit_ts).
CREATE OR REPLACE FUNCTION ace.check_repair_plan_columns(tp jsonb, tbl text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cols text[] := ARRAY(SELECT attname::text FROM pg_attribute WHERE attrelid = tbl::regclass AND attnum > 0 AND NOT attisdropped);
    pk text[] := ARRAY(SELECT a.attname::text FROM pg_index i JOIN LATERAL unnest(i.indkey::int2[]) k(attnum) ON true
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                       WHERE i.indrelid = tbl::regclass AND i.indisprimary ORDER BY 1);
    where_ text;
    col text;
    x jsonb;
BEGIN
    FOR where_, x IN
        SELECT format('rule (%s)', r->>'name'), r->'action' FROM jsonb_array_elements(tp->'rules') r
        UNION ALL SELECT format('row_override (%s)', o->>'name'), o->'action' FROM jsonb_array_elements(tp->'row_overrides') o
        UNION ALL SELECT 'table.default_action', tp->'default_action' WHERE tp ? 'default_action' LOOP
        SELECT c INTO col FROM jsonb_object_keys(coalesce(x->'custom_row', '{}')) c WHERE NOT c = ANY(cols) LIMIT 1;
        IF col IS NOT NULL THEN
            PERFORM ace.repair_plan_error(format('table %s %s: custom_row names column "%s", which %s does not have', tbl, where_, col, tbl));
        END IF;
        col := x->'helpers'->'pick_freshest'->>'key';
        IF col IS NOT NULL AND col <> 'commit_ts' AND NOT col = ANY(cols) THEN
            PERFORM ace.repair_plan_error(format('table %s %s: pick_freshest key "%s" is neither a column of %s nor commit_ts', tbl, where_, col, tbl));
        END IF;
    END LOOP;
    FOR where_, col IN SELECT r->>'name', c FROM jsonb_array_elements(tp->'rules') r, jsonb_array_elements_text(coalesce(r->'columns_changed', '[]')) c
                       WHERE NOT c = ANY(cols) LOOP
        PERFORM ace.repair_plan_error(format('table %s rule (%s): columns_changed names column "%s", which %s does not have', tbl, where_, col, tbl));
    END LOOP;
    FOR x IN SELECT o FROM jsonb_array_elements(tp->'row_overrides') o LOOP
        IF ARRAY(SELECT k FROM jsonb_object_keys(x->'pk') k ORDER BY 1) <> pk THEN
            PERFORM ace.repair_plan_error(format('table %s row_override (%s): pk must name exactly the primary key columns (%s)',
                                                 tbl, x->>'name', array_to_string(pk, ', ')));
        END IF;
    END LOOP;
END $$;

-- Checks an ACE repair plan (its JSON; YAML is converted by the CLI) and returns it normalised:
-- version 1, every rule and row override named, apply_from's mode filled in. With table_name,
-- the plan must have an entry for that table (ACE's "repair plan does not contain table"), whose
-- columns are checked; the result then holds that entry alone, under the table's resolved name.
CREATE OR REPLACE FUNCTION ace.validate_repair_plan(plan jsonb, table_name text DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    tables jsonb := '{}';
    k text;
    v jsonb;
    tbl text;
    found text;
BEGIN
    IF jsonb_typeof(plan) IS DISTINCT FROM 'object' THEN
        PERFORM ace.repair_plan_error('repair plan is nil');
    END IF;
    PERFORM ace.repair_plan_keys(plan, ARRAY['version', 'default_action', 'tables', 'metadata', 'notes'], 'the plan');
    IF coalesce(plan->'version', '0') = 'null' THEN
        plan := plan || '{"version": 0}';
    END IF;
    IF jsonb_typeof(coalesce(plan->'version', '0')) <> 'number' OR (coalesce(plan->>'version', '0'))::numeric < 0
       OR (coalesce(plan->>'version', '0'))::numeric <> trunc((coalesce(plan->>'version', '0'))::numeric) THEN
        PERFORM ace.repair_plan_error('version must be greater than zero');
    END IF;
    IF coalesce((plan->>'version')::numeric, 0) > 1 THEN
        PERFORM ace.repair_plan_error(format('version %s is not known: this agent reads version 1', plan->>'version'));
    END IF;
    plan := plan || '{"version": 1}';
    IF plan ? 'default_action' AND plan->'default_action' <> 'null' THEN
        plan := jsonb_set(plan, '{default_action}', ace.normalize_repair_plan_action(plan->'default_action', 'global', 'default_action'));
    END IF;
    IF jsonb_typeof(plan->'tables') IS DISTINCT FROM 'object' OR plan->'tables' = '{}' THEN
        PERFORM ace.repair_plan_error('at least one table entry is required');
    END IF;
    FOR k, v IN SELECT * FROM jsonb_each(plan->'tables') LOOP
        tables := tables || jsonb_build_object(k, ace.normalize_repair_table_plan(v, k));
    END LOOP;
    IF table_name IS NOT NULL THEN
        tbl := ace.resolve_table(table_name);
        FOR k IN SELECT jsonb_object_keys(tables) LOOP
            BEGIN
                IF to_regclass(k) = tbl::regclass THEN
                    found := k;
                END IF;
            EXCEPTION WHEN invalid_name OR syntax_error THEN
                NULL; -- not a table name this node can read: not this table
            END;
        END LOOP;
        IF found IS NULL THEN
            RAISE EXCEPTION 'repair plan does not contain table %', tbl USING ERRCODE = 'invalid_parameter_value',
                HINT = format('The plan lists %s; add an entry for %s under tables.',
                              (SELECT string_agg(x, ', ' ORDER BY x) FROM jsonb_object_keys(tables) x), tbl);
        END IF;
        PERFORM ace.check_repair_plan_columns(tables->found, tbl);
        tables := jsonb_build_object(tbl, tables->found);
    END IF;
    RETURN jsonb_strip_nulls(plan || jsonb_build_object('tables', tables));
END $$;

-- Saves (or replaces) one of the caller's plans, validated; returns it as stored.
CREATE OR REPLACE FUNCTION ace.save_repair_plan(plan_name text, plan jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    normalised jsonb := ace.validate_repair_plan(plan);
BEGIN
    IF coalesce(btrim(plan_name), '') = '' THEN
        RAISE EXCEPTION 'plan_name is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO ace.repair_plans AS p (plan_name, plan) VALUES (btrim(save_repair_plan.plan_name), normalised)
    ON CONFLICT ON CONSTRAINT repair_plans_pkey DO UPDATE SET plan = EXCLUDED.plan, updated_at = now();
    RETURN normalised;
END $$;

-- Removes one of the caller's plans; false when there was none of that name.
CREATE OR REPLACE FUNCTION ace.drop_repair_plan(plan_name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ace.repair_plans p WHERE p.owner = current_user AND p.plan_name = btrim(drop_repair_plan.plan_name);
    RETURN FOUND;
END $$;

-- The plan a repair runs with: a saved plan of the caller's by name, or one given inline, never
-- both; validated for the table, or NULL for a repair without a plan.
CREATE OR REPLACE FUNCTION ace.repair_plan_arg(args jsonb, tbl text) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    name text := ace.text_arg(args, 'repair_plan');
    inline jsonb := nullif(args->'plan', 'null');
    saved jsonb;
BEGIN
    IF name IS NOT NULL AND inline IS NOT NULL THEN
        RAISE EXCEPTION 'repair_plan and plan cannot be combined' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'repair_plan names a saved plan; plan is a plan given inline. Give one of them.';
    END IF;
    IF name IS NOT NULL THEN
        SELECT p.plan INTO saved FROM ace.repair_plans p WHERE p.owner = current_user AND p.plan_name = name;
        IF saved IS NULL THEN
            RAISE EXCEPTION 'repair plan "%" does not exist', name USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Save it with ace.save_repair_plan(name, plan) or ace-agent repair-plan import; SELECT plan_name FROM ace.repair_plans lists yours.';
        END IF;
        inline := saved;
    END IF;
    IF inline IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN ace.validate_repair_plan(inline, tbl);
END $$;
