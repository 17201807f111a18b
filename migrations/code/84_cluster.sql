-- The cluster's status (issue 19): what each node says about itself (ace.local_status, which
-- every node's agent asks every heartbeat and writes into its ace.node_status), and what a DBA
-- reads: ace.cluster_status, ace.cluster_health and ace.cluster_config_diff. Facts about nodes,
-- never rows.

-- This node's configuration as the cluster compares it: its ace.nodes (name, connection string,
-- cluster, state) and its ace.settings.
CREATE OR REPLACE FUNCTION ace.local_config() RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'nodes', coalesce((SELECT jsonb_object_agg(n.node_name, jsonb_build_object(
                               'conninfo', n.conninfo, 'cluster_name', n.cluster_name, 'state', n.state)) FROM ace.nodes n), '{}'),
        'settings', coalesce((SELECT jsonb_object_agg(s.name, s.value) FROM ace.settings s), '{}'))
$$;

-- A digest of a configuration: jsonb's text form is canonical (keys sorted, no duplicates).
CREATE OR REPLACE FUNCTION ace.config_digest(config jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT encode(sha256(convert_to(config::text, 'UTF8')), 'hex')
$$;

-- The items in which two configurations differ: 'node <name>' or 'setting <name>', with the
-- value each has (NULL where it has none).
CREATE OR REPLACE FUNCTION ace.config_differences(here jsonb, there jsonb)
RETURNS TABLE (item text, expected jsonb, actual jsonb) LANGUAGE sql IMMUTABLE AS $$
    SELECT rtrim(sec.name, 's') || ' ' || k.key, here->sec.name->k.key, there->sec.name->k.key
    FROM (VALUES ('nodes'), ('settings')) sec(name)
    CROSS JOIN LATERAL (SELECT jsonb_object_keys(coalesce(here->sec.name, '{}'))
                        UNION SELECT jsonb_object_keys(coalesce(there->sec.name, '{}'))) k(key)
    WHERE (here->sec.name->k.key) IS DISTINCT FROM (there->sec.name->k.key)
    ORDER BY 1
$$;

-- What this node says about itself to the status collectors, which call it on the agent's
-- login: whether an agent of node_name is alive here (its row is fresher than stale_after and
-- the backend it heartbeats on still exists: a killed agent shows at once), the agent's and the
-- schema's versions, the settings replication depends on, its subscriptions (Spock, pglogical
-- and native, whichever exist), the most WAL a slot holds back, its configuration and what is
-- wrong with it.
CREATE OR REPLACE FUNCTION ace.local_status(node_name text, stale_after interval)
RETURNS TABLE (agent_alive boolean, heartbeat_age interval, version text, schema_version int,
               track_commit_timestamp boolean, wal_level text, max_prepared_transactions int,
               subscriptions_enabled int, subscriptions_total int, max_slot_lag_bytes bigint,
               config_digest text, config jsonb, warning text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    warnings text[] := '{}';
    rel text;
    enabled int;
    total int;
BEGIN
    SELECT coalesce(bool_or(l.live), false), min(clock_timestamp() - a.heartbeat_at),
           (array_agg(a.version ORDER BY l.live DESC, a.heartbeat_at DESC))[1]
        INTO agent_alive, heartbeat_age, version
        FROM ace.agents a CROSS JOIN LATERAL (
            SELECT a.stopped_at IS NULL AND a.heartbeat_at > clock_timestamp() - stale_after
                   AND (a.backend_pid IS NULL OR EXISTS (SELECT 1 FROM pg_stat_activity p
                                                         WHERE p.pid = a.backend_pid AND p.backend_start <= a.heartbeat_at)) AS live) l
        WHERE a.node_name = local_status.node_name;
    IF NOT agent_alive THEN
        warnings := warnings || format('no live agent of node %s here: start ace-agent run beside it', local_status.node_name);
    END IF;
    SELECT max(v.version) INTO schema_version FROM ace.schema_version v;
    track_commit_timestamp := current_setting('track_commit_timestamp')::boolean;
    wal_level := current_setting('wal_level');
    max_prepared_transactions := current_setting('max_prepared_transactions')::int;
    subscriptions_enabled := 0;
    subscriptions_total := 0;
    FOREACH rel IN ARRAY ARRAY['spock.subscription', 'pglogical.subscription'] LOOP
        BEGIN
            IF to_regclass(rel) IS NOT NULL THEN
                EXECUTE format('SELECT count(*) FILTER (WHERE sub_enabled), count(sub_enabled) FROM %s', rel) INTO enabled, total;
                subscriptions_enabled := subscriptions_enabled + enabled;
                subscriptions_total := subscriptions_total + total;
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            warnings := warnings || format('cannot read %s: grant the agent''s login USAGE on its schema and SELECT on it', rel);
        END;
    END LOOP;
    SELECT subscriptions_enabled + count(*) FILTER (WHERE s.subenabled), subscriptions_total + count(s.subenabled)
        INTO subscriptions_enabled, subscriptions_total
        FROM pg_subscription s WHERE s.subdbid = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
    IF subscriptions_enabled < subscriptions_total THEN
        warnings := warnings || format('%s of %s subscriptions are disabled', subscriptions_total - subscriptions_enabled, subscriptions_total);
    END IF;
    IF NOT pg_is_in_recovery() THEN
        SELECT max(pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(s.confirmed_flush_lsn, s.restart_lsn)))::bigint
            INTO max_slot_lag_bytes FROM pg_replication_slots s;
    END IF;
    config := ace.local_config();
    config_digest := ace.config_digest(config);
    warning := nullif(array_to_string(warnings, '; '), '');
    RETURN NEXT;
END $$;

-- Every registered node as this node's agent last saw it, with what a DBA must notice first in
-- warning: a node marked down, a reading that is missing or stale, a configuration that differs
-- from this node's, and what the node said was wrong.
CREATE OR REPLACE FUNCTION ace.cluster_status()
RETURNS TABLE (node_name text, state text, reachable boolean, agent_alive boolean, heartbeat_age interval,
               version text, schema_version int, is_leader boolean, track_commit_timestamp boolean,
               wal_level text, max_prepared_transactions int, subscriptions_enabled int, subscriptions_total int,
               max_slot_lag_bytes bigint, same_config boolean, warning text, reported_at timestamptz)
LANGUAGE sql STABLE AS $$
    WITH here AS (SELECT ace.config_digest(ace.local_config()) AS digest, ace.leader() AS leader)
    SELECT n.node_name, n.state, coalesce(s.reachable, false),
           coalesce(s.agent_alive AND (s.stale_at IS NULL OR s.stale_at > now()), false),
           s.heartbeat_age, s.version, s.schema_version, n.node_name = here.leader, s.track_commit_timestamp,
           s.wal_level, s.max_prepared_transactions, s.subscriptions_enabled, s.subscriptions_total,
           s.max_slot_lag_bytes, s.config_digest = here.digest,
           nullif(concat_ws('; ',
               CASE WHEN n.state = 'down' THEN 'marked down' || coalesce(': ' || n.state_reason, '') END,
               CASE WHEN s.node_name IS NULL THEN 'not collected yet: is this node''s agent running?'
                    WHEN s.stale_at <= now() THEN format('last collected %s ago: is this node''s agent running?',
                                                         date_trunc('second', now() - s.reported_at)) END,
               CASE WHEN s.config_digest <> here.digest THEN 'ace.nodes or ace.settings differ from this node''s: see ace.cluster_config_diff()' END,
               s.warning), ''),
           s.reported_at
    FROM ace.nodes n CROSS JOIN here LEFT JOIN ace.node_status s ON s.node_name = n.node_name
    ORDER BY n.node_name COLLATE "C"
$$;

-- The node this database's agents run for: the one whose agent heartbeat last.
CREATE OR REPLACE FUNCTION ace.local_node() RETURNS text LANGUAGE sql STABLE AS $$
    SELECT a.node_name FROM ace.agents a WHERE a.stopped_at IS NULL ORDER BY a.heartbeat_at DESC LIMIT 1
$$;

-- The cluster's health as this node sees it. The voters are the nodes that are not joining; a
-- node marked down is a voter that is not live. healthy: every voter is live; degraded: more
-- than half of them are (a quorum); unavailable: fewer. ready: in a quorum, and this node itself
-- is live (a task submitted here runs).
CREATE OR REPLACE FUNCTION ace.cluster_health()
RETURNS TABLE (health text, in_quorum boolean, active_nodes int, live_nodes int, missing_nodes text[],
               leader text, ready boolean)
LANGUAGE sql STABLE AS $$
    WITH voters AS (
        SELECT n.node_name, n.state, n.state = 'active' AND ace.node_live(s) AS live
        FROM ace.nodes n LEFT JOIN ace.node_status s ON s.node_name = n.node_name
        WHERE n.state <> 'joining'),
    c AS (
        SELECT count(*) AS voters, count(*) FILTER (WHERE v.live) AS live, count(*) FILTER (WHERE v.state = 'active') AS active,
               coalesce(array_agg(v.node_name ORDER BY v.node_name COLLATE "C") FILTER (WHERE NOT v.live), '{}') AS missing,
               coalesce(bool_or(v.live AND v.node_name = ace.local_node()), false) AS here_live
        FROM voters v)
    SELECT CASE WHEN c.voters > 0 AND c.live = c.voters THEN 'healthy'
                WHEN 2 * c.live > c.voters THEN 'degraded'
                ELSE 'unavailable' END,
           2 * c.live > c.voters, c.active::int, c.live::int, c.missing, ace.leader(),
           2 * c.live > c.voters AND c.here_live
    FROM c
$$;

-- How each node's ace.nodes and ace.settings differ from this node's, item by item: expected is
-- this node's value, actual the node's, as its agent last reported them.
CREATE OR REPLACE FUNCTION ace.cluster_config_diff()
RETURNS TABLE (node_name text, item text, expected jsonb, actual jsonb) LANGUAGE sql STABLE AS $$
    SELECT s.node_name, d.item, d.expected, d.actual
    FROM ace.nodes n JOIN ace.node_status s ON s.node_name = n.node_name
    CROSS JOIN LATERAL ace.config_differences(ace.local_config(), s.config) d
    WHERE s.config IS NOT NULL
    ORDER BY s.node_name COLLATE "C", d.item
$$;
