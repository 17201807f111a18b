-- The queue's trigger functions: server-managed columns, validation, limits at submission, and
-- notifications that reveal nothing. The triggers themselves are made in 90_wiring.sql.

-- Sets every server-managed column, whoever inserts the row and whatever they gave, once the
-- inserting login is found to be a submitter. It runs before ace.tasks_validate (triggers of one
-- event fire in name order), so the task id the validator records is the final one.
CREATE OR REPLACE FUNCTION ace.tasks_server_values() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ace.check_submitter();
    NEW.task_id := gen_random_uuid();
    NEW.status := 'QUEUED';
    NEW.submitted_by := current_user;
    NEW.submitted_session_user := session_user;
    NEW.submitted_at := clock_timestamp();
    NEW.started_at := NULL;
    NEW.finished_at := NULL;
    NEW.claimed_by := NULL;
    NEW.attempts := 0;
    NEW.max_attempts := 3;
    NEW.cancel_requested := false;
    NEW.waiting_on_children := false;
    NEW.progress := NULL;
    NEW.result := NULL;
    NEW.error := NULL;
    RETURN NEW;
END $$;

-- Refuses a task from a login that is not a member of ace_submitters (nor SET ROLE to one): the
-- role pg_hba.conf admits to the agent's certificate. Superusers count as members of every role,
-- and may submit before the role exists.
CREATE OR REPLACE FUNCTION ace.check_submitter() RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname IN (session_user, current_user) AND r.rolsuper) THEN
        RETURN;
    END IF;
    IF to_regrole('ace_submitters') IS NULL THEN
        RAISE EXCEPTION 'role % may not submit tasks: only members of ace_submitters may, and that role does not exist', session_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('As a superuser: CREATE ROLE ace_submitters NOLOGIN; GRANT ace_submitters TO %I;', session_user);
    END IF;
    IF NOT (pg_has_role(session_user, 'ace_submitters', 'MEMBER') OR pg_has_role(current_user, 'ace_submitters', 'MEMBER')) THEN
        RAISE EXCEPTION 'role % may not submit tasks: it is not a member of ace_submitters', session_user
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('An administrator of ace_submitters can GRANT ace_submitters TO %I; (and map the agent''s certificate to it, see ace-agent doctor).', session_user);
    END IF;
END $$;

CREATE OR REPLACE FUNCTION ace.tasks_validate() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    run_of jsonb;
BEGIN
    NEW.submitted_by := current_user;
    NEW.status := 'QUEUED';
    NEW.args := coalesce(NEW.args, '{}');
    IF jsonb_typeof(NEW.args) <> 'object' THEN
        RAISE EXCEPTION 'task args must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A scheduled run's schedule and due time are no argument of its type: they are checked
    -- (ace.check_schedule_run) and kept beside the validated arguments.
    run_of := jsonb_strip_nulls(jsonb_build_object('schedule', NEW.args->'schedule', 'schedule_due', NEW.args->'schedule_due'));
    NEW.args := ace.checked_task_args(NEW.task_type, NEW.args - 'schedule' - 'schedule_due') || run_of;
    PERFORM ace.check_parent_task(NEW.args);
    PERFORM ace.check_schedule_run(NEW.args);
    -- ace.wait uses this to refuse waiting on a task its own transaction has not committed.
    PERFORM set_config('ace.uncommitted_tasks',
                       coalesce(current_setting('ace.uncommitted_tasks', true), '') || NEW.task_id::text || ' ', true);
    RETURN NEW;
END $$;

-- Validates and normalises a task's arguments with its type's ace.validate_<type>, as the caller:
-- the insert trigger and ace.schedule share it.
CREATE OR REPLACE FUNCTION ace.checked_task_args(task_type text, args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    validator regprocedure;
BEGIN
    validator := to_regprocedure(format('ace.%I(jsonb)', 'validate_' || replace(coalesce(task_type, ''), '-', '_')));
    IF validator IS NULL THEN
        RAISE EXCEPTION 'unknown task type "%"', task_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known task types: ' || (SELECT string_agg(replace(substr(proname, 10), '_', '-'), ', ' ORDER BY proname)
                                                 FROM pg_proc WHERE pronamespace = 'ace'::regnamespace AND proname LIKE 'validate\_%');
    END IF;
    EXECUTE format('SELECT %s($1)', validator::oid::regproc) INTO args USING args;
    RETURN args;
END $$;

-- Refuses a task when the inserting login (session_user: SET ROLE does not change it) already
-- has max_queued_tasks_per_role tasks queued. SECURITY DEFINER: it counts the login's tasks of
-- every role it submitted them as, which row-level security would hide from the current role.
CREATE OR REPLACE FUNCTION ace.check_queued_limit() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    lim int := ace.setting('max_queued_tasks_per_role')::int;
    queued bigint;
BEGIN
    IF lim IS NULL THEN
        RETURN;
    END IF;
    -- The row lock puts the login's concurrent submissions in line, so each counts the ones before.
    INSERT INTO ace.role_submissions AS s (role_name) VALUES (session_user)
        ON CONFLICT ON CONSTRAINT role_submissions_pkey DO UPDATE SET last_submitted_at = clock_timestamp();
    SELECT count(*) INTO queued FROM ace.tasks t WHERE t.submitted_session_user = session_user AND t.status = 'QUEUED';
    IF queued >= lim THEN
        RAISE EXCEPTION 'role % already has % queued tasks, as many as max_queued_tasks_per_role allows', session_user, queued
            USING ERRCODE = 'configuration_limit_exceeded',
                  HINT = 'Wait until some have started, or cancel some with ace.cancel(task_id); the limit counts the login, whatever role it sets. '
                         || ace.setting_hint('max_queued_tasks_per_role', (lim * 2)::text);
    END IF;
END $$;

-- Refuses a recheck_after (normalised to seconds) longer than max_recheck_after.
CREATE OR REPLACE FUNCTION ace.check_recheck_after(args jsonb) RETURNS void
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

-- Refuses a cdc_timeout (normalised to seconds) longer than max_cdc_timeout: an mtree-diff holds
-- its agent's slot for as long as it waits for the nodes' streams.
CREATE OR REPLACE FUNCTION ace.check_cdc_timeout(timeout interval) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    cap interval := ace.setting('max_cdc_timeout')::interval;
BEGIN
    IF cap IS NOT NULL AND timeout > cap THEN
        RAISE EXCEPTION 'cdc_timeout % is longer than max_cdc_timeout (%)', timeout, ace.setting('max_cdc_timeout')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Ask for a shorter cdc_timeout. ' || ace.setting_hint('max_cdc_timeout', '30 minutes');
    END IF;
END $$;

CREATE OR REPLACE FUNCTION ace.tasks_within_limits() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ace.check_recheck_after(NEW.args);
    PERFORM ace.check_queued_limit();
    RETURN NEW;
END $$;

-- The application_name a session sets while it writes for the claim with this key.
CREATE OR REPLACE FUNCTION ace.writer_tag(lock_key bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'ace-agent writer ' || lock_key
$$;

-- The channel of one task's own notifications: its status changes (payload: the new status) and
-- progress (payload: progress). Only who knows the task's id can name it.
CREATE OR REPLACE FUNCTION ace.task_channel(task_id uuid) RETURNS text
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
