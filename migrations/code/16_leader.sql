-- The leader: which node does the cluster-scope work (cluster schedules and repair policies).
-- No consensus is needed: that work is read-only or compare-and-set, so two leaders during a
-- partition are harmless. Nodes that see the same ace.node_status agree.

-- Whether a node is live as this node's agent last saw it: reachable, with a live agent, in a
-- reading that is not stale (the collector that wrote it, this node's agent, still collects).
-- The one definition of a live node, for the leader and the cluster's health.
CREATE OR REPLACE FUNCTION ace.node_live(s ace.node_status) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(s.reachable AND s.agent_alive AND (s.stale_at IS NULL OR s.stale_at > now()), false)
$$;

-- The leader is the pinned node while it is active with a live agent; otherwise the first
-- active node by name (in byte order, the same on every node) with a live agent. NULL when no
-- active node has a live agent, as far as this node's agent last saw.
CREATE OR REPLACE FUNCTION ace.leader() RETURNS text LANGUAGE sql STABLE AS $$
    WITH live AS (
        SELECT n.node_name FROM ace.nodes n JOIN ace.node_status s ON s.node_name = n.node_name
        WHERE n.state = 'active' AND ace.node_live(s))
    SELECT coalesce((SELECT p.node_name FROM ace.leader_pin p JOIN live l ON l.node_name = p.node_name),
                    (SELECT l.node_name FROM live l ORDER BY l.node_name COLLATE "C" LIMIT 1))
$$;

-- Whether this node is the leader: a live agent of this database is registered as the leader.
CREATE OR REPLACE FUNCTION ace.is_leader() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT coalesce(EXISTS (SELECT 1 FROM ace.agents a
                            WHERE a.node_name = ace.leader() AND a.stopped_at IS NULL), false)
$$;

-- Refuses a caller who does not own the ace schema (the agent's login does): what follows
-- changes the cluster's shared state.
CREATE OR REPLACE FUNCTION ace.require_schema_owner(action text) RETURNS void LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT pg_has_role(current_user, (SELECT n.nspowner FROM pg_namespace n WHERE n.nspname = 'ace'), 'USAGE') THEN
        RAISE EXCEPTION 'permission denied: only the owner of schema ace may %', action
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Connect as the agent''s login (the owner of schema ace), or ask its administrator.';
    END IF;
END $$;

-- Pins the leader to a node, or unpins it with NULL. Only the schema's owner may.
CREATE OR REPLACE FUNCTION ace.set_leader(node_name text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ace.require_schema_owner('pin the leader');
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
