-- The leader: which node does the cluster-scope work (cluster schedules and repair policies).
-- No consensus is needed: that work is read-only or compare-and-set, so two leaders during a
-- partition are harmless. Nodes that see the same ace.node_status agree.

-- The leader is the pinned node while it is active with a live agent; otherwise the first
-- active node by name (in byte order, the same on every node) with a live agent. NULL when no
-- active node has a live agent, as far as this node's agent last saw.
CREATE OR REPLACE FUNCTION ace.leader() RETURNS text LANGUAGE sql STABLE AS $$
    WITH live AS (
        SELECT n.node_name FROM ace.nodes n JOIN ace.node_status s ON s.node_name = n.node_name
        WHERE n.state = 'active' AND s.agent_alive)
    SELECT coalesce((SELECT p.node_name FROM ace.leader_pin p JOIN live l ON l.node_name = p.node_name),
                    (SELECT l.node_name FROM live l ORDER BY l.node_name COLLATE "C" LIMIT 1))
$$;

-- Whether this node is the leader: a live agent of this database is registered as the leader.
CREATE OR REPLACE FUNCTION ace.is_leader() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(EXISTS (SELECT 1 FROM ace.agents a
                            WHERE a.node_name = ace.leader() AND a.stopped_at IS NULL), false)
$$;

-- Pins the leader to a node, or unpins it with NULL. Only the schema's owner may: it writes
-- ace.leader_pin with the caller's privileges.
CREATE OR REPLACE FUNCTION ace.set_leader(node_name text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF node_name IS NULL THEN
        DELETE FROM ace.leader_pin;
    ELSE
        IF NOT EXISTS (SELECT 1 FROM ace.nodes n WHERE n.node_name = set_leader.node_name) THEN
            RAISE EXCEPTION 'node % is not in ace.nodes', node_name
                USING ERRCODE = 'no_data_found', HINT = 'SELECT node_name FROM ace.nodes lists the nodes.';
        END IF;
        INSERT INTO ace.leader_pin (node_name) VALUES (set_leader.node_name)
        ON CONFLICT (pinned) DO UPDATE SET node_name = EXCLUDED.node_name, pinned_at = now();
    END IF;
    PERFORM ace.record_event('leader_pinned', set_leader.node_name, detail => jsonb_build_object('leader', ace.leader()));
    RETURN ace.leader();
END $$;
