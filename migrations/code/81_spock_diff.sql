-- The SQL API of spock-diff: ace.spock_diff submits a task that compares the replication
-- configuration (subscriptions, and the sets each table is in) of the nodes, on Spock,
-- pglogical or native logical replication. The agent reads each node's catalog logged in as
-- the submitter, so a user sees only what she may read there.

CREATE OR REPLACE FUNCTION ace.validate_spock_diff(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    unknown text;
BEGIN
    SELECT string_agg(k, ', ' ORDER BY k) INTO unknown FROM jsonb_object_keys(args) k WHERE k NOT IN ('nodes');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'spock-diff takes no argument %', unknown
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Its only argument is nodes: SELECT ace.spock_diff(ARRAY[''n1'', ''n2'']);';
    END IF;
    RETURN jsonb_build_object('nodes', to_jsonb(ace.resolve_nodes(ace.nodes_arg(args))));
END $$;

CREATE OR REPLACE FUNCTION ace.spock_diff(nodes text[] DEFAULT NULL)
RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('spock-diff', jsonb_strip_nulls(jsonb_build_object('nodes', nodes)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;
