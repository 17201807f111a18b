-- The ace schema's baseline: the tables, indexes, row-level-security policies and grants that
-- migrations 001-005 of earlier releases left, squashed into one file. It holds no functions,
-- procedures or triggers: those live once each in migrations/code/ and sqlapi.Install
-- (re)installs them after the migrations on every run, together with what depends on them (the
-- triggers of ace.tasks and the CHECK of ace.settings, in code/90_wiring.sql).
--
-- A database installed by an earlier release is at version 5 already and skips this file and the
-- placeholders 002-005. A change to a table is a new numbered migration (006_...); a change to a
-- function is an edit of its one definition in migrations/code/.

CREATE SCHEMA IF NOT EXISTS ace;
GRANT USAGE ON SCHEMA ace TO PUBLIC;

-- The cluster as this node sees it. Credentials never live here: the agent reads them from its
-- own environment (.pgpass, a service file, PG* variables).
CREATE TABLE ace.nodes (
    node_name    text PRIMARY KEY
                 CONSTRAINT node_name_format CHECK (node_name ~ '^[A-Za-z_][A-Za-z0-9_.-]*$'),
    conninfo     text NOT NULL
                 CONSTRAINT conninfo_has_no_password CHECK (
                     conninfo !~* '(^|\s)password\s*='
                     AND conninfo !~* '^postgres(ql)?://[^/@]*:[^/@]*@'
                     AND conninfo !~* '[?&]password='),
    cluster_name text NOT NULL DEFAULT 'default',
    added_at     timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON ace.nodes TO PUBLIC;

-- One row per running agent. backend_pid is the agent's own session, so a hung agent can be
-- told apart from a dead one.
CREATE TABLE ace.agents (
    agent_id     text PRIMARY KEY,
    node_name    text NOT NULL,
    hostname     text NOT NULL,
    os_pid       int NOT NULL,
    version      text NOT NULL,
    max_tasks    int NOT NULL,
    running      int NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz
);
GRANT SELECT ON ace.agents TO PUBLIC;

CREATE TABLE ace.tasks (
    task_id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    task_type        text NOT NULL,
    status           text NOT NULL DEFAULT 'QUEUED'
                     CONSTRAINT task_status CHECK (status IN ('QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    args             jsonb NOT NULL DEFAULT '{}',
    submitted_by     name NOT NULL DEFAULT current_user,
    submitted_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    started_at       timestamptz,
    finished_at      timestamptz,
    claimed_by       text,
    attempts         int NOT NULL DEFAULT 0,
    max_attempts     int NOT NULL DEFAULT 3,
    cancel_requested boolean NOT NULL DEFAULT false,
    progress         jsonb,
    result           jsonb,
    error            text
);
CREATE INDEX tasks_queued ON ace.tasks (submitted_at) WHERE status = 'QUEUED';
CREATE INDEX tasks_running ON ace.tasks (claimed_by) WHERE status = 'RUNNING';

-- Users see their own tasks (and those of roles they belong to); the agent owns the table and
-- bypasses the policy.
ALTER TABLE ace.tasks ENABLE ROW LEVEL SECURITY;
CREATE POLICY tasks_visible ON ace.tasks FOR SELECT USING (pg_has_role(current_user, submitted_by, 'MEMBER'));
CREATE POLICY tasks_insert ON ace.tasks FOR INSERT WITH CHECK (submitted_by = current_user);
-- Users may insert only the task's type and arguments; triggers set every other column.
GRANT SELECT ON ace.tasks TO PUBLIC;
GRANT INSERT (task_type, args) ON ace.tasks TO PUBLIC;

-- One row per primary key that differs between the nodes of a diff task.
CREATE TABLE ace.diff_results (
    task_id uuid NOT NULL REFERENCES ace.tasks ON DELETE CASCADE,
    row_no  bigint NOT NULL,
    pk      jsonb NOT NULL,
    pk_sort jsonb NOT NULL,   -- the key's values as an array in key order, for ORDER BY
    kind    text NOT NULL CONSTRAINT diff_kind CHECK (kind IN ('missing', 'modified')),
    rows    jsonb NOT NULL,   -- node name -> row as a JSON object, or null where absent
    versions jsonb,           -- node name -> version number; equal numbers mean identical rows
    meta    jsonb,            -- node name -> {commit_ts, node_origin}
    PRIMARY KEY (task_id, row_no)
);
ALTER TABLE ace.diff_results ENABLE ROW LEVEL SECURITY;
CREATE POLICY diff_results_visible ON ace.diff_results FOR SELECT
    USING (EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = diff_results.task_id));
GRANT SELECT ON ace.diff_results TO PUBLIC;

---- Repairs.

-- One row per key and node a repair looked at: what it did there, or why it left the row alone.
CREATE TABLE ace.repair_actions (
    task_id uuid NOT NULL REFERENCES ace.tasks ON DELETE CASCADE,
    row_no  bigint NOT NULL,
    attempt int NOT NULL,
    node    text NOT NULL,
    action  text NOT NULL CONSTRAINT repair_action CHECK (action IN ('insert', 'update', 'delete', 'skip')),
    pk      jsonb NOT NULL,
    pk_sort jsonb NOT NULL,   -- the key's values as an array in key order, for ORDER BY
    source  text,             -- the node whose version of the row was copied
    before  jsonb,            -- the row on the node before the repair (null: absent)
    after   jsonb,            -- the row after it (null: absent); for a skip, what it would have been
    reason  text,             -- why a row was skipped, or what a partial fix left
    applied boolean NOT NULL DEFAULT false, -- committed on the node (never for skips and dry runs)
    PRIMARY KEY (task_id, row_no)
);
ALTER TABLE ace.repair_actions ENABLE ROW LEVEL SECURITY;
CREATE POLICY repair_actions_visible ON ace.repair_actions FOR SELECT
    USING (EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = repair_actions.task_id));
GRANT SELECT ON ace.repair_actions TO PUBLIC;

---- Settings: limits that keep one role from taking the queue or the agents for itself.

-- Everyone may read the limits; only the schema's owner may change them. A missing row lifts
-- its limit. Its CHECK (setting_value_valid, ace.check_setting) is added in code/90_wiring.sql,
-- once the function exists.
CREATE TABLE ace.settings (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    description text NOT NULL
);
GRANT SELECT ON ace.settings TO PUBLIC;
INSERT INTO ace.settings (name, value, description) VALUES
    ('max_queued_tasks_per_role', '50', 'tasks one role may have QUEUED at once; a submission beyond it is refused'),
    ('max_running_tasks_per_role', '2', 'tasks of one role that run at once on this node; agents leave the role''s other tasks QUEUED meanwhile'),
    ('max_task_runtime', '12 hours', 'how long a task may run; the agent stops a task that runs longer and marks it FAILED'),
    ('max_recheck_after', '1 hour', 'the longest recheck_after a table-diff may ask for');

---- Limits at submission.

-- One row per role that submitted: the row lock its submissions take puts a role's concurrent
-- submissions in line, so each counts the ones before it. A role reaches only its own row.
CREATE TABLE ace.role_submissions (
    role_name         name PRIMARY KEY,
    last_submitted_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE ace.role_submissions ENABLE ROW LEVEL SECURITY;
CREATE POLICY role_submissions_own ON ace.role_submissions
    USING (role_name = current_user) WITH CHECK (role_name = current_user);
GRANT SELECT, INSERT, UPDATE ON ace.role_submissions TO PUBLIC;

CREATE INDEX tasks_queued_by_role ON ace.tasks (submitted_by) WHERE status = 'QUEUED';
CREATE INDEX tasks_running_by_role ON ace.tasks (submitted_by) WHERE status = 'RUNNING';

---- Claims: what marks a running task, where submitters cannot see it.

-- One row per task that was claimed, for its latest claim. lock_key is the random key of the
-- session advisory lock that the claim's session (claim_pid, logged in as claim_role) holds
-- while the task runs; the task's writes are tagged with application_name ace.writer_tag(lock_key).
-- No grants: only the schema's owner (the agents' login) reads it.
CREATE TABLE ace.claims (
    task_id    uuid PRIMARY KEY REFERENCES ace.tasks ON DELETE CASCADE,
    agent_id   text NOT NULL,
    attempt    int NOT NULL,
    lock_key   bigint NOT NULL,
    claim_pid  int NOT NULL,
    claim_role oid NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
