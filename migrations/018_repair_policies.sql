-- Repair policies (issue 20, M13): a diff, then a guarded repair of what it found, run on behalf
-- of the role that made the policy, by hand (ace.run_repair_policy) or on a timer. Changed only
-- through the functions of code/87_repair_policies.sql.
--
-- The timer is a schedule: a policy with every or cron owns the row "repair_policy:<name>" of
-- ace.schedules (task type repair-policy-run), so it fires as schedules do (the leader for cluster
-- scope, once per due time, paused and resumed with it). The foreign key keeps the two together:
-- the schedule goes only with its policy.
CREATE TABLE ace.repair_policies (
    owner             name NOT NULL,
    policy_name       text NOT NULL CONSTRAINT repair_policy_name_given CHECK (btrim(policy_name) <> ''),
    table_name        text NOT NULL,                -- schema.table as ace.resolve_table spells it
    strategy          text NOT NULL
                      CONSTRAINT repair_policy_strategy CHECK (strategy IN ('source_of_truth', 'latest_commit', 'majority', 'plan')),
    source_of_truth   text,
    repair_plan       text,                         -- a saved plan of the owner (ace.repair_plans)
    nodes             text[],                       -- NULL: every registered node, read at each run
    trigger           text NOT NULL DEFAULT 'schedule'
                      CONSTRAINT repair_policy_trigger CHECK (trigger IN ('schedule', 'spock_exceptions')),
    recheck_after     interval NOT NULL DEFAULT '30 seconds',
    max_rows          int NOT NULL DEFAULT 1000 CONSTRAINT repair_policy_max_rows CHECK (max_rows > 0),
    max_runs_per_hour int NOT NULL DEFAULT 6 CONSTRAINT repair_policy_max_runs CHECK (max_runs_per_hour > 0),
    dry_run           boolean NOT NULL DEFAULT false,
    upsert_only       boolean NOT NULL DEFAULT false,
    schedule_name     text,                         -- its schedule; NULL: it runs by hand only
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner, policy_name),
    CONSTRAINT repair_policy_schedule FOREIGN KEY (owner, schedule_name) REFERENCES ace.schedules (owner, schedule_name)
);
ALTER TABLE ace.repair_policies ENABLE ROW LEVEL SECURITY;
CREATE POLICY repair_policies_own ON ace.repair_policies FOR SELECT USING (pg_has_role(current_user, owner, 'MEMBER'));
GRANT SELECT ON ace.repair_policies TO PUBLIC;

-- A policy's runs, found by ace.repair_policy_runs and counted for max_runs_per_hour.
CREATE INDEX tasks_repair_policy ON ace.tasks (submitted_by, (args->>'policy_name'), submitted_at)
    WHERE task_type = 'repair-policy-run';
