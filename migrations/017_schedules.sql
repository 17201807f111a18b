-- Schedules (issue 19): tasks that the agents start on a timer, every interval or by a cron
-- expression, on behalf of the role that made the schedule. Changed only through the functions of
-- code/85_schedules.sql; the agent fires due schedules with ace.fire_schedule in a session logged
-- in as the owner.

-- One row per schedule. Its name is the owner's: two roles may each have a schedule "nightly".
-- next_due is the due time the next run is for; firing it moves it on with a compare-and-set in
-- the same transaction as the run's insert, so each due time fires once.
CREATE TABLE ace.schedules (
    owner         name NOT NULL,
    schedule_name text NOT NULL CONSTRAINT schedule_name_given CHECK (btrim(schedule_name) <> ''),
    task_type     text NOT NULL,
    args          jsonb NOT NULL DEFAULT '{}',   -- as given: each run's insert validates them again
    every         interval,
    cron          text,
    scope         text NOT NULL DEFAULT 'node' CONSTRAINT schedule_scope CHECK (scope IN ('node', 'cluster')),
    overlap       text NOT NULL DEFAULT 'skip' CONSTRAINT schedule_overlap CHECK (overlap IN ('skip', 'allow')),
    enabled       boolean NOT NULL DEFAULT true,
    next_due      timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_fired    timestamptz,                   -- the due time of the last run started (or refused)
    last_task     uuid,                          -- the task of the last run started
    runs          bigint NOT NULL DEFAULT 0,     -- runs started
    skipped       bigint NOT NULL DEFAULT 0,     -- due times skipped: the previous run was still QUEUED or RUNNING
    failures      bigint NOT NULL DEFAULT 0,     -- due times whose run was refused (its arguments no longer valid)
    last_error    text,
    last_error_at timestamptz,
    PRIMARY KEY (owner, schedule_name),
    CONSTRAINT schedule_every_or_cron CHECK ((every IS NULL) <> (cron IS NULL))
);
CREATE INDEX schedules_due ON ace.schedules (next_due) WHERE enabled;
ALTER TABLE ace.schedules ENABLE ROW LEVEL SECURITY;
CREATE POLICY schedules_own ON ace.schedules FOR SELECT USING (pg_has_role(current_user, owner, 'MEMBER'));
GRANT SELECT ON ace.schedules TO PUBLIC;

-- A scheduled run carries its schedule and due time in its args: at most one task per due time,
-- whatever happens between the insert and the commit.
CREATE UNIQUE INDEX tasks_schedule_due ON ace.tasks (submitted_by, (args->>'schedule'), (args->>'schedule_due'))
    WHERE args ? 'schedule';
