-- A queue no submitter can stall, jump or fill, and notifications that reveal nothing.
--
-- - Users write only task_type and args; every other column of ace.tasks is set by the server.
-- - A running task is marked by a session advisory lock on a random key the agent draws at claim
--   time and keeps in ace.claims, which submitters cannot read. A key that does not exist before
--   the claim cannot be taken beforehand, and a held one cannot be taken at all; the recovery
--   sweep asks whether the claim's own session still holds it, so a user who takes the key after
--   that session ended fools nobody.
-- - Per-role limits and a time limit live in ace.settings.
-- - NOTIFY payloads carry no task ids: agents get payload-free wake-ups, and a task's own channel
--   (ace.task_channel) is for whoever knows its id.

---- Settings: limits that keep one role from taking the queue or the agents for itself.

-- Refuses a value a setting cannot take, naming the setting.
CREATE FUNCTION ace.check_setting(name text, value text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    span interval;
BEGIN
    CASE name
    WHEN 'max_queued_tasks_per_role', 'max_running_tasks_per_role' THEN
        IF value !~ '^\s*[0-9]{1,9}\s*$' OR NOT value ~ '[1-9]' THEN
            RAISE EXCEPTION 'setting % must be a whole number of at least 1, got "%"', name, value
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN 'max_task_runtime', 'max_recheck_after' THEN
        BEGIN
            span := value::interval;
        EXCEPTION WHEN data_exception OR syntax_error THEN
            span := NULL;
        END;
        IF span IS NULL OR span <= interval '0' THEN
            RAISE EXCEPTION 'setting % must be a positive interval such as ''12 hours'', got "%"', name, value
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown setting "%"', name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known settings: max_queued_tasks_per_role, max_running_tasks_per_role, max_task_runtime, max_recheck_after.';
    END CASE;
    RETURN true;
END $$;

-- Everyone may read the limits; only the schema's owner may change them. A missing row lifts
-- its limit.
CREATE TABLE ace.settings (
    name        text PRIMARY KEY,
    value       text NOT NULL,
    description text NOT NULL,
    CONSTRAINT setting_value_valid CHECK (ace.check_setting(name, value))
);
GRANT SELECT ON ace.settings TO PUBLIC;
INSERT INTO ace.settings (name, value, description) VALUES
    ('max_queued_tasks_per_role', '50', 'tasks one role may have QUEUED at once; a submission beyond it is refused'),
    ('max_running_tasks_per_role', '2', 'tasks of one role that run at once on this node; agents leave the role''s other tasks QUEUED meanwhile'),
    ('max_task_runtime', '12 hours', 'how long a task may run; the agent stops a task that runs longer and marks it FAILED'),
    ('max_recheck_after', '1 hour', 'the longest recheck_after a table-diff may ask for');

-- A setting's value, NULL when its row is missing.
CREATE FUNCTION ace.setting(name text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT s.value FROM ace.settings s WHERE s.name = setting.name
$$;

-- How to change a setting, for hints.
CREATE FUNCTION ace.setting_hint(name text, example text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('The limit is the row %s of ace.settings; the owner of the ace schema can change it: UPDATE ace.settings SET value = %L WHERE name = %L;',
                  name, example, name)
$$;

---- Server-managed columns.

-- Users may insert only the task's type and arguments.
REVOKE INSERT ON ace.tasks FROM PUBLIC;
GRANT INSERT (task_type, args) ON ace.tasks TO PUBLIC;

-- Sets every server-managed column, whoever inserts the row and whatever they gave. It runs
-- before ace.tasks_validate (triggers of one event fire in name order), so the task id the
-- validator records is the final one.
CREATE FUNCTION ace.tasks_server_values() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.task_id := gen_random_uuid();
    NEW.status := 'QUEUED';
    NEW.submitted_by := current_user;
    NEW.submitted_at := clock_timestamp();
    NEW.started_at := NULL;
    NEW.finished_at := NULL;
    NEW.claimed_by := NULL;
    NEW.attempts := 0;
    NEW.max_attempts := 3;
    NEW.cancel_requested := false;
    NEW.progress := NULL;
    NEW.result := NULL;
    NEW.error := NULL;
    RETURN NEW;
END $$;
CREATE TRIGGER tasks_server_values BEFORE INSERT ON ace.tasks
    FOR EACH ROW EXECUTE FUNCTION ace.tasks_server_values();

---- Limits at submission. They run after ace.tasks_validate, on the normalised arguments.

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

-- Refuses a task when its role already has max_queued_tasks_per_role tasks queued.
CREATE FUNCTION ace.check_queued_limit(role_name name) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    lim int := ace.setting('max_queued_tasks_per_role')::int;
    queued bigint;
BEGIN
    IF lim IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO ace.role_submissions AS s (role_name) VALUES (check_queued_limit.role_name)
        ON CONFLICT ON CONSTRAINT role_submissions_pkey DO UPDATE SET last_submitted_at = clock_timestamp();
    SELECT count(*) INTO queued FROM ace.tasks t WHERE t.submitted_by = check_queued_limit.role_name AND t.status = 'QUEUED';
    IF queued >= lim THEN
        RAISE EXCEPTION 'role % already has % queued tasks, as many as max_queued_tasks_per_role allows', role_name, queued
            USING ERRCODE = 'configuration_limit_exceeded',
                  HINT = 'Wait until some have started, or cancel some with ace.cancel(task_id). '
                         || ace.setting_hint('max_queued_tasks_per_role', (lim * 2)::text);
    END IF;
END $$;

-- Refuses a recheck_after (normalised to seconds) longer than max_recheck_after.
CREATE FUNCTION ace.check_recheck_after(args jsonb) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cap interval := ace.setting('max_recheck_after')::interval;
BEGIN
    IF cap IS NOT NULL AND jsonb_typeof(args->'recheck_after') = 'number'
       AND (args->>'recheck_after')::numeric > extract(epoch FROM cap) THEN
        RAISE EXCEPTION 'recheck_after % is longer than max_recheck_after (%)',
                        make_interval(secs => (args->>'recheck_after')::float8), ace.setting('max_recheck_after')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Ask for a shorter recheck_after. ' || ace.setting_hint('max_recheck_after', '2 hours');
    END IF;
END $$;

CREATE FUNCTION ace.tasks_within_limits() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ace.check_recheck_after(NEW.args);
    PERFORM ace.check_queued_limit(NEW.submitted_by);
    RETURN NEW;
END $$;
CREATE TRIGGER tasks_within_limits BEFORE INSERT ON ace.tasks
    FOR EACH ROW EXECUTE FUNCTION ace.tasks_within_limits();

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

-- The application_name a session sets while it writes for the claim with this key.
CREATE FUNCTION ace.writer_tag(lock_key bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'ace-agent writer ' || lock_key
$$;

---- Notifications that reveal nothing.

-- The channel of one task's own notifications: its status changes (payload: the new status) and
-- progress (payload: progress). Only who knows the task's id can name it.
CREATE FUNCTION ace.task_channel(task_id uuid) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'ace_task_' || replace(task_id::text, '-', '')
$$;

-- Agents LISTEN on ace_task (a task was queued) and ace_task_cancel (a cancel was asked for), both
-- without a payload: an agent polls the queue, or reads its running tasks' cancel flags.
CREATE OR REPLACE FUNCTION ace.tasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('ace_task', '');
        RETURN NULL;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NEW.status = 'QUEUED' THEN
            PERFORM pg_notify('ace_task', '');
        END IF;
        PERFORM pg_notify(ace.task_channel(NEW.task_id), NEW.status);
    ELSIF NEW.cancel_requested AND NOT OLD.cancel_requested THEN
        PERFORM pg_notify('ace_task_cancel', '');
    ELSIF NEW.progress IS DISTINCT FROM OLD.progress THEN
        PERFORM pg_notify(ace.task_channel(NEW.task_id), 'progress');
    END IF;
    RETURN NULL;
END $$;
