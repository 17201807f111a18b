-- The SQL API of schema diffs: ace.schema_diff, its CALL form, its validator, the catalog each
-- node reports (ace.schema_catalog), reading the findings, and the parent/child checks that
-- every task type that runs child tasks shares (ace.check_parent_task).

CREATE OR REPLACE FUNCTION ace.schema_diff(
    schema_name text,
    nodes text[] DEFAULT NULL,
    skip_tables text[] DEFAULT NULL,
    ddl_only boolean DEFAULT false,
    compare text DEFAULT NULL,
    compare_privileges boolean DEFAULT false,
    ignore_names boolean DEFAULT false,
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
    VALUES ('schema-diff', jsonb_strip_nulls(jsonb_build_object(
        'schema_name', schema_name, 'nodes', nodes, 'skip_tables', skip_tables, 'ddl_only', ddl_only,
        'compare', compare, 'compare_privileges', compare_privileges, 'ignore_names', ignore_names,
        'block_size', block_size, 'table_filter', table_filter, 'max_diff_rows', max_diff_rows,
        'compare_unit_size', compare_unit_size, 'concurrency_factor', concurrency_factor,
        'max_connections', max_connections, 'override_block_size', override_block_size)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

CREATE OR REPLACE PROCEDURE ace.run_schema_diff(
    schema_name text,
    nodes text[] DEFAULT NULL,
    skip_tables text[] DEFAULT NULL,
    ddl_only boolean DEFAULT false,
    compare text DEFAULT NULL,
    compare_privileges boolean DEFAULT false,
    ignore_names boolean DEFAULT false,
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
    task_id := ace.schema_diff(schema_name, nodes, skip_tables, ddl_only, compare, compare_privileges, ignore_names,
                               block_size, table_filter, max_diff_rows, compare_unit_size, concurrency_factor,
                               max_connections, override_block_size);
    RAISE NOTICE 'submitted schema-diff task %', task_id;
    COMMIT;
    CALL ace.follow_submitted(task_id, status, outcome, summary);
END $$;

-- A one-line account of a schema diff's result.
CREATE OR REPLACE FUNCTION ace.describe_schema_diff(summary jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN summary IS NULL THEN 'no summary'
        WHEN summary->>'compare' = 'data' THEN format('schema %s: %s table(s): %s identical, %s differ, %s missing on some node, %s failed, %s skipped',
            summary->>'schema', summary->>'tables_total', jsonb_array_length(summary->'identical'),
            jsonb_array_length(summary->'differed'), jsonb_array_length(summary->'missing'),
            jsonb_array_length(summary->'failed'), jsonb_array_length(summary->'skipped'))
        ELSE format('schema %s (%s): %s finding(s)', summary->>'schema', summary->>'compare', summary->>'findings')
    END
$$;

-- Reads the skip_tables argument of schema-diff and repset-diff: an array, or (as ACE's command
-- line takes it) a comma list. Returns each entry, in order, with its name parts (table, or
-- schema and table).
CREATE OR REPLACE FUNCTION ace.skip_tables_entries(args jsonb) RETURNS TABLE (entry text, parts text[])
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    entries text[];
BEGIN
    CASE coalesce(jsonb_typeof(args->'skip_tables'), 'null')
        WHEN 'null' THEN RETURN;
        WHEN 'array' THEN
            IF EXISTS (SELECT 1 FROM jsonb_array_elements(args->'skip_tables') e WHERE jsonb_typeof(e) <> 'string') THEN
                RAISE EXCEPTION 'skip_tables must be table names, got %', args->'skip_tables' USING ERRCODE = 'invalid_parameter_value';
            END IF;
            entries := ARRAY(SELECT jsonb_array_elements_text(args->'skip_tables'));
        WHEN 'string' THEN
            entries := string_to_array(args->>'skip_tables', ',');
        ELSE
            RAISE EXCEPTION 'skip_tables must be an array of table names or a comma-separated list, got %', args->'skip_tables'
                USING ERRCODE = 'invalid_parameter_value';
    END CASE;
    FOREACH entry IN ARRAY entries LOOP
        CONTINUE WHEN btrim(entry) = '';
        BEGIN
            parts := parse_ident(btrim(entry));
        EXCEPTION WHEN invalid_parameter_value OR invalid_name OR syntax_error THEN
            RAISE EXCEPTION 'invalid table name "%" in skip_tables', entry
                USING ERRCODE = 'invalid_name', HINT = 'Write table or schema.table; quote mixed-case names: "Orders".';
        END;
        IF cardinality(parts) > 2 THEN
            RAISE EXCEPTION 'invalid table name "%" in skip_tables', entry
                USING ERRCODE = 'invalid_name', HINT = 'Write table or schema.table.';
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

-- schema-diff's skip_tables: tables of the diffed schema, returned as bare table names.
CREATE OR REPLACE FUNCTION ace.skip_tables_arg(args jsonb, schema_name text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    skip record;
BEGIN
    FOR skip IN SELECT * FROM ace.skip_tables_entries(args) LOOP
        IF cardinality(skip.parts) = 2 AND skip.parts[1] <> schema_name THEN
            RAISE EXCEPTION 'skip_tables entry "%" is not a table of schema %', skip.entry, schema_name
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Name tables of the diffed schema only, as table or schema.table.';
        END IF;
    END LOOP;
    RETURN ARRAY(SELECT DISTINCT e.parts[cardinality(e.parts)] FROM ace.skip_tables_entries(args) e ORDER BY 1);
END $$;

CREATE OR REPLACE FUNCTION ace.validate_schema_diff(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    schema_name text := ace.text_arg(args, 'schema_name');
    ddl_only boolean := ace.bool_arg(args, 'ddl_only', false);
    compare text := lower(ace.text_arg(args, 'compare'));
BEGIN
    IF schema_name IS NULL THEN
        RAISE EXCEPTION 'schema_name is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A schema this node lacks would compare as empty everywhere: refused rather than reported in sync.
    IF to_regnamespace(quote_ident(schema_name)) IS NULL THEN
        RAISE EXCEPTION 'schema "%" does not exist on this node', schema_name
            USING ERRCODE = 'invalid_schema_name', HINT = 'Give the schema''s name as it is stored (no quotes), for example public.';
    END IF;
    IF NOT has_schema_privilege(current_user, quote_ident(schema_name), 'USAGE') THEN
        RAISE EXCEPTION 'permission denied: role % cannot use schema %', current_user, schema_name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF ddl_only AND coalesce(compare, 'objects') <> 'objects' THEN
        RAISE EXCEPTION 'ddl_only means compare => ''objects'', not ''%''', compare
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass either ddl_only => true or compare => ''objects''.';
    END IF;
    -- ACE's output: the result is JSON in the ace schema; no other format is written.
    IF coalesce(ace.text_arg(args, 'output'), 'json') <> 'json' THEN
        RAISE EXCEPTION 'output must be json for a schema diff, got "%"', args->>'output'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The result is stored as JSON; export a table''s diff as html or csv with ace-agent diff export.';
    END IF;
    compare := coalesce(compare, CASE WHEN ddl_only THEN 'objects' ELSE 'data' END);
    IF compare NOT IN ('objects', 'structure', 'data') THEN
        RAISE EXCEPTION 'compare must be objects, structure or data, got "%"', compare USING ERRCODE = 'invalid_parameter_value';
    END IF;
    args := args || jsonb_build_object('schema_name', schema_name, 'compare', compare, 'ddl_only', compare = 'objects',
        'nodes', to_jsonb(ace.resolve_nodes(ace.nodes_arg(args))),
        'skip_tables', to_jsonb(ace.skip_tables_arg(args, schema_name)),
        'compare_privileges', ace.bool_arg(args, 'compare_privileges', false),
        'ignore_names', ace.bool_arg(args, 'ignore_names', false),
        'override_block_size', ace.bool_arg(args, 'override_block_size', false),
        'table_filter', ace.text_arg(args, 'table_filter'));
    -- The children's options, checked once here so that a bad one fails the schema diff rather
    -- than every table; each child's own validator still judges them in full.
    PERFORM ace.check_positive(args, k) FROM unnest(ARRAY['block_size', 'max_diff_rows', 'compare_unit_size']) k;
    IF NOT (args->>'override_block_size')::boolean THEN
        PERFORM ace.check_range(args, 'block_size', 1000, 1000000,
            'Pass override_block_size => true to use a block size outside the guardrails.');
    END IF;
    PERFORM ace.check_range(args, 'max_connections', 0, 1000);
    PERFORM ace.check_range(args, 'concurrency_factor', 0, 4);
    -- Only the type's own keys are kept: a child's parent_task, say, means nothing here.
    SELECT jsonb_object_agg(key, value) INTO args FROM jsonb_each(args)
        WHERE key = ANY (ARRAY['schema_name', 'compare', 'nodes', 'skip_tables', 'ddl_only', 'compare_privileges',
            'ignore_names', 'override_block_size', 'block_size', 'table_filter', 'max_diff_rows', 'compare_unit_size',
            'concurrency_factor', 'max_connections']);
    RETURN jsonb_strip_nulls(args);
END $$;

-- The findings of a schema diff's structure or objects comparison, one row each.
CREATE OR REPLACE FUNCTION ace.schema_diff_rows(task_id uuid)
RETURNS TABLE (object_type text, object_name text, detail text, kind text, definitions jsonb)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = schema_diff_rows.task_id) THEN
        RAISE EXCEPTION 'task % does not exist', task_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN QUERY SELECT f.object_type, f.object_name, f.detail, f.kind, f.definitions
        FROM ace.schema_findings f WHERE f.task_id = schema_diff_rows.task_id ORDER BY f.row_no;
END $$;

-- A child task names its parent in args->>'parent_task'. Checked by the insert trigger for every
-- task type: the parent must be a running task of the inserting role, so a child cannot be
-- attached to someone else's task, nor be cancelled by cancelling it.
CREATE OR REPLACE FUNCTION ace.check_parent_task(args jsonb) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    parent uuid;
BEGIN
    IF NOT args ? 'parent_task' THEN
        RETURN;
    END IF;
    BEGIN
        parent := (args->>'parent_task')::uuid;
    EXCEPTION WHEN invalid_text_representation THEN
        RAISE EXCEPTION 'parent_task must be a task id, got %', args->'parent_task' USING ERRCODE = 'invalid_parameter_value';
    END;
    IF NOT EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = parent AND t.submitted_by = current_user AND t.status = 'RUNNING') THEN
        RAISE EXCEPTION 'parent_task % is not a running task of role %', parent, current_user
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Only a running parent task inserts its children.';
    END IF;
END $$;

-- One table's definition for ace.schema_catalog. Constraints, indexes and triggers are keyed by
-- name; an index's "unnamed" form leaves its own name out, for ignore_names.
CREATE OR REPLACE FUNCTION ace.table_catalog(rel oid, with_privileges boolean)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    SELECT jsonb_build_object(
        'columns', (SELECT coalesce(jsonb_object_agg(a.attname, jsonb_strip_nulls(jsonb_build_object(
                'type', format_type(a.atttypid, a.atttypmod),
                'not_null', a.attnotnull,
                'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                'collation', (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                              FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation),
                'identity', CASE a.attidentity WHEN 'a' THEN 'GENERATED ALWAYS AS IDENTITY' WHEN 'd' THEN 'GENERATED BY DEFAULT AS IDENTITY' END,
                'generated', CASE WHEN a.attgenerated = 's' THEN 'GENERATED ALWAYS AS (' || pg_get_expr(d.adbin, d.adrelid) || ') STORED' END))), '{}')
            FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped),
        'key', (SELECT jsonb_agg(a.attname ORDER BY k.ord)
            FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, ord), pg_attribute a
            WHERE i.indrelid = rel AND i.indisprimary AND a.attrelid = rel AND a.attnum = k.attnum),
        'constraints', (SELECT coalesce(jsonb_object_agg(c.conname, pg_get_constraintdef(c.oid, true)), '{}')
            FROM pg_constraint c WHERE c.conrelid = rel),
        'indexes', (SELECT coalesce(jsonb_object_agg(ic.relname, jsonb_build_object('def', x.def,
                'unnamed', replace(x.def, 'INDEX ' || quote_ident(ic.relname) || ' ON ', 'INDEX ON '))), '{}')
            FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid, LATERAL (SELECT pg_get_indexdef(i.indexrelid) AS def) x
            WHERE i.indrelid = rel),
        'triggers', (SELECT coalesce(jsonb_object_agg(g.tgname, pg_get_triggerdef(g.oid, true)), '{}')
            FROM pg_trigger g WHERE g.tgrelid = rel AND NOT g.tgisinternal),
        'policies', (SELECT coalesce(jsonb_object_agg(p.polname, concat_ws(' ',
                CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                'FOR', CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                'TO', (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END, ', '
                              ORDER BY CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END) FROM unnest(p.polroles) r),
                'USING (' || pg_get_expr(p.polqual, p.polrelid) || ')',
                'WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')')), '{}')
            FROM pg_policy p WHERE p.polrelid = rel),
        'row_security', (SELECT CASE WHEN c.relrowsecurity THEN 'enabled' ELSE 'disabled' END
                                || CASE WHEN c.relforcerowsecurity THEN ', forced' ELSE '' END),
        'replica_identity', (SELECT CASE c.relreplident WHEN 'd' THEN 'DEFAULT' WHEN 'n' THEN 'NOTHING' WHEN 'f' THEN 'FULL'
                ELSE 'USING INDEX ' || (SELECT quote_ident(ic.relname) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                                        WHERE i.indrelid = rel AND i.indisreplident) END),
        'partition_key', CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(rel) END,
        'partition_of', (SELECT h.inhparent::regclass::text FROM pg_inherits h WHERE h.inhrelid = rel AND c.relispartition),
        'partition_bound', CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, rel) END,
        -- The enum labels and domain checks of the columns' types (and their arrays' elements).
        'column_types', (SELECT coalesce(jsonb_object_agg(format_type(t.oid, NULL), CASE t.typtype
                WHEN 'e' THEN 'ENUM (' || (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                                           FROM pg_enum e WHERE e.enumtypid = t.oid) || ')'
                ELSE concat_ws(' ', 'DOMAIN AS', format_type(t.typbasetype, t.typtypmod),
                               CASE WHEN t.typnotnull THEN 'NOT NULL' END,
                               (SELECT string_agg(pg_get_constraintdef(dc.oid, true), ' ' ORDER BY pg_get_constraintdef(dc.oid, true))
                                FROM pg_constraint dc WHERE dc.contypid = t.oid)) END), '{}')
            FROM pg_type t
            WHERE t.typtype IN ('e', 'd') AND t.oid IN (
                SELECT x FROM pg_attribute a JOIN pg_type at ON at.oid = a.atttypid,
                     LATERAL (VALUES (at.oid), (at.typelem)) v(x)
                WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped)),
        'owner', CASE WHEN with_privileges THEN pg_get_userbyid(c.relowner) END,
        'acl', CASE WHEN with_privileges THEN (
            SELECT string_agg(format('%s=%s%s', CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END,
                                     x.privilege_type, CASE WHEN x.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END), ', '
                              ORDER BY CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END, x.privilege_type)
            FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) x) END)
    FROM pg_class c WHERE c.oid = rel
$$;

-- What one node holds in a schema, for a schema diff: every object's name ("objects"), and with
-- with_tables each table's definition, every part rendered as text the same way on every node
-- (search_path is pg_catalog, so every name outside it is schema-qualified; no OIDs). Runs in
-- the submitter's session on each node.
CREATE OR REPLACE FUNCTION ace.schema_catalog(schema_name text, with_tables boolean, with_privileges boolean)
RETURNS jsonb LANGUAGE sql STABLE SET search_path = pg_catalog AS $$
    WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname = schema_name),
    rels AS (SELECT c.* FROM pg_class c JOIN ns ON c.relnamespace = ns.oid)
    SELECT jsonb_build_object(
        'objects', jsonb_build_object(
            'tables', (SELECT coalesce(jsonb_agg(relname ORDER BY relname), '[]') FROM rels WHERE relkind IN ('r', 'p')),
            'views', (SELECT coalesce(jsonb_agg(relname ORDER BY relname), '[]') FROM rels WHERE relkind = 'v'),
            'materialized_views', (SELECT coalesce(jsonb_agg(relname ORDER BY relname), '[]') FROM rels WHERE relkind = 'm'),
            'sequences', (SELECT coalesce(jsonb_agg(relname ORDER BY relname), '[]') FROM rels WHERE relkind = 'S'),
            'indexes', (SELECT coalesce(jsonb_agg(relname ORDER BY relname), '[]') FROM rels WHERE relkind IN ('i', 'I')),
            'functions', (SELECT coalesce(jsonb_agg(f ORDER BY f), '[]') FROM (
                SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS f
                FROM pg_proc p JOIN ns ON p.pronamespace = ns.oid) x),
            'types', (SELECT coalesce(jsonb_agg(t.typname ORDER BY t.typname), '[]')
                FROM pg_type t JOIN ns ON t.typnamespace = ns.oid
                WHERE t.typcategory <> 'A'
                  AND (t.typrelid = 0 OR (SELECT r.relkind FROM pg_class r WHERE r.oid = t.typrelid) = 'c')),
            'triggers', (SELECT coalesce(jsonb_agg(r.relname || '.' || g.tgname ORDER BY r.relname, g.tgname), '[]')
                FROM pg_trigger g JOIN rels r ON r.oid = g.tgrelid WHERE NOT g.tgisinternal),
            'policies', (SELECT coalesce(jsonb_agg(r.relname || '.' || p.polname ORDER BY r.relname, p.polname), '[]')
                FROM pg_policy p JOIN rels r ON r.oid = p.polrelid)),
        'tables', CASE WHEN with_tables THEN (SELECT coalesce(jsonb_object_agg(c.relname, ace.table_catalog(c.oid, with_privileges)), '{}')
            FROM rels c WHERE c.relkind IN ('r', 'p')) END)
$$;
