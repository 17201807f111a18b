-- The cluster's life (issue 19): node states and the event log.

-- A node is joining (takes part only when named), active (the default nodes of a task) or down
-- (refused when named). The state functions of code/40_tasks.sql change it and record an event.
ALTER TABLE ace.nodes
    ADD COLUMN state text NOT NULL DEFAULT 'active'
        CONSTRAINT node_state CHECK (state IN ('joining', 'active', 'down')),
    ADD COLUMN state_reason text,
    ADD COLUMN state_changed_at timestamptz NOT NULL DEFAULT now();

-- What happened in the cluster, in order: node and agent changes, the leader, configuration
-- drift, schedules and per-table verdicts. It holds facts about nodes, tables and tasks, never
-- rows. An event about a task is visible only to who may see the task, and an event about a
-- role's own object (its detail names an "owner", such as a schedule's) only to that role and
-- its members; the others to everyone.
-- Written only through ace.record_event, which also wakes listeners on ace_event (no payload).
CREATE TABLE ace.events (
    event_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind       text NOT NULL,
    node_name  text,
    table_name text,
    task_id    uuid,
    actor      name NOT NULL DEFAULT session_user,
    detail     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_at ON ace.events (at);
CREATE INDEX events_task ON ace.events (task_id) WHERE task_id IS NOT NULL;
ALTER TABLE ace.events ENABLE ROW LEVEL SECURITY;
CREATE POLICY events_visible ON ace.events FOR SELECT
    USING ((task_id IS NULL OR EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = events.task_id))
           AND (NOT detail ? 'owner' OR EXISTS (SELECT 1 FROM pg_roles r
                                                WHERE r.rolname = events.detail->>'owner'
                                                  AND pg_has_role(current_user, r.oid, 'MEMBER'))));
GRANT SELECT ON ace.events TO PUBLIC;

INSERT INTO ace.settings (name, value, description) VALUES
    ('event_retention', '30 days', 'how long events are kept in ace.events; the agent deletes older ones'),
    ('scheduled_task_retention', '7 days', 'how long finished tasks that a schedule or a repair policy started are kept (task_retention applies to the others)'),
    ('min_schedule_interval', '1 minute', 'the shortest every a schedule or a repair policy may have'),
    ('schedule_timezone', 'UTC', 'the time zone in which cron expressions of schedules and repair policies are read'),
    ('table_status_max_age', '1 day', 'how old a table''s last verdict in ace.table_status may be before it is shown as stale')
ON CONFLICT (name) DO NOTHING;

-- What this node's agent last saw of every node (itself included), collected every heartbeat:
-- facts about the nodes, never rows. ace.cluster_status reads it, and the leader is chosen from it.
CREATE TABLE ace.node_status (
    node_name                 text PRIMARY KEY,
    reachable                 boolean NOT NULL,
    agent_alive               boolean NOT NULL,
    heartbeat_age             interval,
    version                   text,
    schema_version            int,
    track_commit_timestamp    boolean,
    wal_level                 text,
    max_prepared_transactions int,
    subscriptions_enabled     int,
    subscriptions_total       int,
    max_slot_lag_bytes        bigint,
    config_digest             text,       -- of the node's ace.nodes and ace.settings rows
    config                    jsonb,      -- those rows, for ace.cluster_config_diff
    warning                   text,
    reported_at               timestamptz NOT NULL DEFAULT clock_timestamp()
);
GRANT SELECT ON ace.node_status TO PUBLIC;

-- The node pinned as leader by the schema's owner (ace.set_leader), at most one row.
CREATE TABLE ace.leader_pin (
    pinned    boolean PRIMARY KEY DEFAULT true CONSTRAINT one_pin CHECK (pinned),
    node_name text NOT NULL REFERENCES ace.nodes ON DELETE CASCADE,
    pinned_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON ace.leader_pin TO PUBLIC;
