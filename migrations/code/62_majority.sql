-- The majority strategy of repairs and the resync of a node (issue 20, M19).
--
-- ace.table_repair(d, strategy => 'majority') keeps, per key, the version (absence included)
-- held by more than half of the diff's nodes; ace.check_majority refuses it where no majority can
-- exist. ace.resync_node(node) is a parent task: one child table-diff per table, then one child
-- table-repair per table that differs, whose target is that node only.

-- Refuses strategy majority on a diff of fewer than three nodes: two nodes, or one against
-- another, cannot outvote each other.
CREATE OR REPLACE FUNCTION ace.check_majority(args jsonb, diff_nodes text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF args->>'strategy' = 'majority' AND cardinality(diff_nodes) < 3 THEN
        RAISE EXCEPTION 'strategy majority needs a diff of three nodes or more; this diff has % (%)',
                        cardinality(diff_nodes), array_to_string(diff_nodes, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'With two nodes neither can outvote the other: name the node whose rows are right with source_of_truth, or diff three or more nodes.';
    END IF;
END $$;

-- The tables a resync with tables => NULL covers: every table with a primary key that the current
-- user may SELECT, outside the system schemas, the ace schema and the schemas and tables that
-- belong to an extension (Spock's and pglogical's catalogs, say).
CREATE OR REPLACE FUNCTION ace.resync_tables() RETURNS text[]
LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(format('%I.%I', n.nspname, c.relname) ORDER BY n.nspname, c.relname), '{}')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
      AND n.nspname NOT IN ('ace', 'information_schema') AND n.nspname NOT LIKE 'pg\_%'
      AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
      AND has_table_privilege(current_user, c.oid, 'SELECT')
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.deptype = 'e'
                      AND ((d.classid = 'pg_namespace'::regclass AND d.objid = n.oid)
                        OR (d.classid = 'pg_class'::regclass AND d.objid = c.oid)))
$$;

CREATE OR REPLACE FUNCTION ace.resync_node(
    node_name text,
    tables text[] DEFAULT NULL,
    strategy text DEFAULT 'majority',
    source_of_truth text DEFAULT NULL
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('node-resync', jsonb_strip_nulls(jsonb_build_object(
        'node_name', node_name, 'tables', tables, 'strategy', strategy, 'source_of_truth', source_of_truth)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

-- Submits a resync, commits it, and waits, raising a NOTICE whenever progress changes; ends as
-- every CALL form does (ace.follow_submitted). It must be called outside a transaction block,
-- because it commits.
CREATE OR REPLACE PROCEDURE ace.run_resync_node(
    node_name text,
    tables text[] DEFAULT NULL,
    strategy text DEFAULT 'majority',
    source_of_truth text DEFAULT NULL,
    INOUT task_id uuid DEFAULT NULL,
    INOUT status text DEFAULT NULL,
    INOUT outcome text DEFAULT NULL,
    INOUT summary jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
BEGIN
    task_id := ace.resync_node(node_name, tables, strategy, source_of_truth);
    RAISE NOTICE 'submitted node-resync task %', task_id;
    COMMIT;
    CALL ace.follow_submitted(task_id, status, outcome, summary);
END $$;

-- A one-line account of a resync's result.
CREATE OR REPLACE FUNCTION ace.describe_resync(summary jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN summary IS NULL THEN 'no summary'
        ELSE format('resync of %s (%s): %s table(s): %s in sync, %s repaired (%s inserted, %s updated, %s deleted), %s left with unresolved rows%s',
            summary->>'node_name', summary->>'strategy', summary->>'tables_total', summary->>'in_sync', summary->>'repaired',
            summary->>'inserted', summary->>'updated', summary->>'deleted', summary->>'unresolved_tables',
            CASE WHEN (summary->>'fully_resynced')::boolean THEN '' ELSE '; see each table''s repair with ace.repair_rows(repair_task)' END)
    END
$$;

-- Checks a resync and fills in what the agent needs: the diff's nodes, the tables, the strategy.
-- A source_of_truth makes the resync copy from that node (strategy source_of_truth); the diff is
-- then between the two nodes only. Otherwise the diff covers every registered node, the node
-- included.
CREATE OR REPLACE FUNCTION ace.validate_node_resync(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    node text := ace.text_arg(args, 'node_name');
    strategy text := lower(coalesce(ace.text_arg(args, 'strategy'), 'majority'));
    sot text := ace.text_arg(args, 'source_of_truth');
    diff_nodes text[];
    tables text[];
    named boolean := coalesce(jsonb_typeof(args->'tables') = 'array' AND jsonb_array_length(args->'tables') > 0, false);
BEGIN
    IF node IS NULL THEN
        RAISE EXCEPTION 'node_name is required: the node to resync' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ace.nodes n WHERE n.node_name = node) THEN
        RAISE EXCEPTION 'unknown node: %', node USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Registered nodes are listed in ace.nodes.';
    END IF;
    IF strategy NOT IN ('majority', 'latest_commit', 'source_of_truth') THEN
        RAISE EXCEPTION 'unknown strategy "%"', strategy USING ERRCODE = 'invalid_parameter_value',
            HINT = 'The strategies are majority (the default), latest_commit and source_of_truth.';
    END IF;
    IF sot IS NOT NULL AND strategy = 'latest_commit' THEN
        RAISE EXCEPTION 'strategy latest_commit and source_of_truth cannot be combined' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'A source_of_truth replaces the vote: leave strategy at its default, or leave source_of_truth out.';
    END IF;
    IF sot IS NOT NULL THEN
        strategy := 'source_of_truth';
    END IF;
    IF strategy = 'source_of_truth' THEN
        IF sot IS NULL THEN
            RAISE EXCEPTION 'strategy source_of_truth needs a source_of_truth' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'Name the node whose rows are right: source_of_truth => ''n1''.';
        END IF;
        IF sot = node THEN
            RAISE EXCEPTION 'node % cannot be resynced from itself', node USING ERRCODE = 'invalid_parameter_value';
        END IF;
        diff_nodes := ace.resolve_nodes(ARRAY[sot, node]);
    ELSE
        diff_nodes := ace.resolve_nodes(NULL);
        IF NOT node = ANY(diff_nodes) THEN
            diff_nodes := ace.resolve_nodes(diff_nodes || node);
        END IF;
    END IF;
    PERFORM ace.check_majority(jsonb_build_object('strategy', strategy), diff_nodes);
    IF named THEN
        tables := ARRAY(SELECT DISTINCT ace.resolve_table(t) FROM jsonb_array_elements_text(args->'tables') t ORDER BY 1);
    ELSE
        tables := ace.resync_tables();
    END IF;
    IF cardinality(tables) = 0 THEN
        RAISE EXCEPTION 'no table to resync: role % may read no table with a primary key outside the system schemas', current_user
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name the tables with tables => ARRAY[''public.orders''].';
    END IF;
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'node_name', node, 'tables', to_jsonb(tables), 'all_tables', NOT named,
        'strategy', strategy, 'source_of_truth', sot, 'nodes', to_jsonb(diff_nodes), 'parent_task', args->'parent_task'));
END $$;
