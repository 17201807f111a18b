-- The cluster's status (issue 19): what the status collectors need beside migration 012.

-- The backend of the connection each agent heartbeats on. An agent is alive while its row is
-- fresh and that backend still exists: a killed agent's connections close at once, so its death
-- shows at the next collection instead of after STALE_AFTER.
ALTER TABLE ace.agents ADD COLUMN backend_pid int;

-- When a collected row stops saying anything: past it, the node counts as not live (its
-- collector, this node's agent, stopped collecting). NULL: never.
ALTER TABLE ace.node_status ADD COLUMN stale_at timestamptz;
