-- Repair policies (issue 20, M13, anti-entropy): the owner's functions (ace.repair_policy,
-- ace.run_repair_policy, ace.repair_policy_runs, ace.drop_repair_policy, ace.pause_repair_policy,
-- ace.resume_repair_policy), the run's validator (ace.validate_repair_policy_run) and its one-line
-- account (ace.describe_policy_run).
--
-- A run (task type repair-policy-run) is a parent task: a child diff (mtree-diff when the table
-- has a ready tree, else table-diff) with the policy's recheck_after; then, when fewer than
-- max_rows keys differ, a child table-repair with the compare-and-set forced on and a child
-- table-rerun. agent/policy.go runs it and records its outcome (in_sync, held, skipped, repaired,
-- dry_run; a failure fails the task) in the task's result and as auto_repair_* events.
--
-- The timer is a schedule (85_schedules.sql) named ace.policy_schedule_name(policy), whose task is
-- a run of the policy: the policy's every, cron, scope and enabled are that schedule's, and the
-- scheduler fires it as any schedule. ace.repair_policies is written only by the SECURITY DEFINER
-- functions below whose names end in _repair_policy_row; each refuses a login that is not a member
-- of the owner, so a role changes only its own policies.

-- The schedule that fires a policy.
CREATE OR REPLACE FUNCTION ace.policy_schedule_name(policy_name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'repair_policy:' || policy_name
$$;

-- Refuses, in ace.schedule and ace.unschedule, what would take a policy's schedule away from it:
-- a schedule of policy runs made by hand, or a change to the schedule a policy owns.
CREATE OR REPLACE FUNCTION ace.check_not_policy_schedule(schedule_name text, task_type text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF task_type = 'repair-policy-run' OR EXISTS (SELECT 1 FROM ace.repair_policies p
                                                   WHERE p.owner = current_user AND p.schedule_name = check_not_policy_schedule.schedule_name) THEN
        RAISE EXCEPTION 'schedule "%" belongs to a repair policy: it is changed with the policy', schedule_name
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Change the timer with ace.repair_policy(..., every => ..., cron => ...), stop it with ace.pause_repair_policy(name) or ace.drop_repair_policy(name).';
    END IF;
END $$;

-- The nodes a run of the policy diffs: the policy's, or every registered node that is not still
-- joining. Down ones are included: the run is skipped while one is down, rather than refused or
-- quietly repairing fewer nodes (a diff's own node check would refuse a down node).
CREATE OR REPLACE FUNCTION ace.repair_policy_nodes(nodes text[]) RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    named text[];
    unknown text[];
BEGIN
    IF nodes IS NULL OR cardinality(nodes) = 0 THEN
        RETURN (SELECT coalesce(array_agg(n.node_name ORDER BY n.node_name), '{}') FROM ace.nodes n WHERE n.state <> 'joining');
    END IF;
    SELECT array_agg(DISTINCT btrim(n) ORDER BY btrim(n)) INTO named FROM unnest(nodes) n;
    SELECT array_agg(n ORDER BY n) INTO unknown FROM unnest(named) n WHERE NOT EXISTS (SELECT 1 FROM ace.nodes x WHERE x.node_name = n);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown node(s): %', array_to_string(unknown, ', ')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Registered nodes are listed in ace.nodes; add one with ace.add_node(name, conninfo).';
    END IF;
    RETURN named;
END $$;

-- Checks a policy as the caller, at its creation and again at each run: the table, the caller's
-- privileges for the mode, the strategy and what it needs. Returns the table's name, resolved.
-- at_creation adds the checks on the cluster's state now (track_commit_timestamp here, three
-- active nodes for majority); at a run the agent checks those on every node and skips or fails
-- the run with the reason.
CREATE OR REPLACE FUNCTION ace.check_repair_policy(table_name text, strategy text, source_of_truth text, repair_plan text,
                                                   nodes text[], dry_run boolean, upsert_only boolean, at_creation boolean)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    tbl text := ace.resolve_table(table_name);
    run_nodes text[] := ace.repair_policy_nodes(nodes);
    active int;
BEGIN
    IF strategy IS NULL OR strategy NOT IN ('source_of_truth', 'latest_commit', 'majority', 'plan') THEN
        RAISE EXCEPTION 'unknown strategy "%"', strategy USING ERRCODE = 'invalid_parameter_value',
            HINT = 'The strategies are source_of_truth (with source_of_truth => node), latest_commit, majority and plan (with repair_plan => a saved plan).';
    END IF;
    IF (strategy = 'source_of_truth') <> (source_of_truth IS NOT NULL) THEN
        RAISE EXCEPTION '%', CASE WHEN source_of_truth IS NULL THEN 'strategy source_of_truth needs a source_of_truth'
                                  ELSE format('source_of_truth is given only with strategy source_of_truth, not %s', strategy) END
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Name the node whose rows are right: strategy => ''source_of_truth'', source_of_truth => ''n1''.';
    END IF;
    IF (strategy = 'plan') <> (repair_plan IS NOT NULL) THEN
        RAISE EXCEPTION '%', CASE WHEN repair_plan IS NULL THEN 'strategy plan needs a repair_plan'
                                  ELSE format('repair_plan is given only with strategy plan, not %s', strategy) END
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Save a plan with ace.save_repair_plan(name, plan), then strategy => ''plan'', repair_plan => name.';
    END IF;
    IF strategy = 'plan' THEN
        PERFORM ace.repair_plan_arg(jsonb_build_object('repair_plan', repair_plan), tbl);
        IF upsert_only THEN
            RAISE EXCEPTION 'a repair plan cannot be combined with upsert_only' USING ERRCODE = 'invalid_parameter_value',
                HINT = 'The plan''s rules decide every row (apply_from with mode upsert, ...): say it there.';
        END IF;
    END IF;
    IF source_of_truth IS NOT NULL AND NOT source_of_truth = ANY (run_nodes) THEN
        RAISE EXCEPTION 'source_of_truth % is not one of the policy''s nodes (%)', source_of_truth, array_to_string(run_nodes, ', ')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(run_nodes) < 2 THEN
        RAISE EXCEPTION 'a repair policy needs at least 2 nodes, got %', coalesce(nullif(array_to_string(run_nodes, ', '), ''), 'none')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Register the cluster''s nodes with ace.add_node(name, conninfo).';
    END IF;
    PERFORM ace.check_privileges(tbl,
        CASE WHEN dry_run THEN ARRAY['SELECT'] ELSE ace.repair_privileges(jsonb_build_object('upsert_only', upsert_only)) END,
        'the policy''s repairs need');
    IF at_creation AND strategy = 'latest_commit' AND current_setting('track_commit_timestamp') <> 'on' THEN
        RAISE EXCEPTION 'strategy latest_commit needs track_commit_timestamp = on on every node; it is off here'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Set track_commit_timestamp = on in postgresql.conf on every node and restart; each run checks every node again.';
    END IF;
    IF at_creation AND strategy = 'majority' THEN
        SELECT count(*) INTO active FROM ace.nodes n WHERE n.node_name = ANY (run_nodes) AND n.state = 'active';
        IF active < 3 THEN
            RAISE EXCEPTION 'strategy majority needs three or more active nodes; the policy''s nodes have % (%)', active,
                            array_to_string(run_nodes, ', ')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'With two nodes neither can outvote the other: use strategy source_of_truth, or register a third node.';
        END IF;
    END IF;
    RETURN tbl;
END $$;

-- Makes a repair policy, or redefines the caller's policy of that name, and returns when it is
-- first due (NULL for a policy without every or cron, which runs only by ace.run_repair_policy).
-- Everything is checked as the caller now; each run checks the table, the privileges and the
-- plan again, and the nodes' state.
CREATE OR REPLACE FUNCTION ace.repair_policy(
    policy_name text,
    table_name text,
    strategy text,
    source_of_truth text DEFAULT NULL,
    repair_plan text DEFAULT NULL,
    every interval DEFAULT NULL,
    cron text DEFAULT NULL,
    trigger text DEFAULT 'schedule',
    recheck_after interval DEFAULT '30 seconds',
    max_rows int DEFAULT 1000,
    max_runs_per_hour int DEFAULT 6,
    dry_run boolean DEFAULT false,
    nodes text[] DEFAULT NULL,
    upsert_only boolean DEFAULT false,
    scope text DEFAULT 'node',
    enabled boolean DEFAULT true,
    run_now boolean DEFAULT false
) RETURNS timestamptz LANGUAGE plpgsql AS $$
DECLARE
    tbl text;
BEGIN
    PERFORM ace.check_submitter();
    IF policy_name IS NULL OR btrim(policy_name) = '' THEN
        RAISE EXCEPTION 'policy_name is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    strategy := lower(btrim(strategy));
    tbl := ace.check_repair_policy(table_name, strategy, nullif(btrim(source_of_truth), ''), nullif(btrim(repair_plan), ''),
                                   nodes, coalesce(dry_run, false), coalesce(upsert_only, false), true);
    IF trigger IS NULL OR trigger NOT IN ('schedule', 'spock_exceptions') THEN
        RAISE EXCEPTION 'trigger must be schedule or spock_exceptions, got "%"', trigger USING ERRCODE = 'invalid_parameter_value',
            HINT = 'schedule: each run diffs the table; spock_exceptions: each run repairs the keys of the table''s PENDING Spock exceptions.';
    END IF;
    IF recheck_after IS NULL OR recheck_after < interval '0' THEN
        RAISE EXCEPTION 'recheck_after must be an interval of 0 or more, got %', coalesce(recheck_after::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'It is how long a difference may be replication lag: ''30 seconds'', say.';
    END IF;
    PERFORM ace.check_recheck_after(jsonb_build_object('recheck_after', extract(epoch FROM recheck_after)));
    IF max_rows IS NULL OR max_rows < 1 OR max_runs_per_hour IS NULL OR max_runs_per_hour < 1 THEN
        RAISE EXCEPTION 'max_rows and max_runs_per_hour must be 1 or more, got % and %', max_rows, max_runs_per_hour
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN ace.save_repair_policy_row(current_user, btrim(policy_name), tbl, strategy, nullif(btrim(source_of_truth), ''),
        nullif(btrim(repair_plan), ''), nullif(nodes, '{}'), trigger, recheck_after, max_rows, max_runs_per_hour,
        coalesce(dry_run, false), coalesce(upsert_only, false), every, cron, coalesce(scope, 'node'), coalesce(enabled, true),
        coalesce(run_now, false));
END $$;

-- Saves the owner's policy and its schedule (made, changed or removed with it). A redefined
-- policy keeps its schedule's counters.
CREATE OR REPLACE FUNCTION ace.save_repair_policy_row(owner name, policy_name text, table_name text, strategy text,
    source_of_truth text, repair_plan text, nodes text[], trigger text, recheck_after interval, max_rows int,
    max_runs_per_hour int, dry_run boolean, upsert_only boolean, every interval, cron text, scope text, enabled boolean,
    run_now boolean)
RETURNS timestamptz LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    sched text := ace.policy_schedule_name(policy_name);
    timed boolean := every IS NOT NULL OR cron IS NOT NULL;
    first_due timestamptz;
BEGIN
    PERFORM ace.check_acts_for(owner, 'repair policies');
    IF timed THEN
        first_due := ace.save_schedule_row(owner, sched, 'repair-policy-run', jsonb_build_object('policy_name', policy_name),
                                           every, cron, run_now, scope, 'skip', enabled);
    END IF;
    INSERT INTO ace.repair_policies AS p (owner, policy_name, table_name, strategy, source_of_truth, repair_plan, nodes, trigger,
                                          recheck_after, max_rows, max_runs_per_hour, dry_run, upsert_only, schedule_name)
    VALUES (owner, policy_name, table_name, strategy, source_of_truth, repair_plan, nodes, trigger, recheck_after, max_rows,
            max_runs_per_hour, dry_run, upsert_only, CASE WHEN timed THEN sched END)
    ON CONFLICT ON CONSTRAINT repair_policies_pkey DO UPDATE SET
        table_name = EXCLUDED.table_name, strategy = EXCLUDED.strategy, source_of_truth = EXCLUDED.source_of_truth,
        repair_plan = EXCLUDED.repair_plan, nodes = EXCLUDED.nodes, trigger = EXCLUDED.trigger,
        recheck_after = EXCLUDED.recheck_after, max_rows = EXCLUDED.max_rows, max_runs_per_hour = EXCLUDED.max_runs_per_hour,
        dry_run = EXCLUDED.dry_run, upsert_only = EXCLUDED.upsert_only, schedule_name = EXCLUDED.schedule_name;
    IF NOT timed AND EXISTS (SELECT 1 FROM ace.schedules s WHERE s.owner = save_repair_policy_row.owner AND s.schedule_name = sched) THEN
        PERFORM ace.change_schedule_row(owner, sched, 'remove');
    END IF;
    RETURN first_due;
END $$;

-- Removes the owner's policy and its schedule; false when there is none. Its past runs stay
-- (they are tasks, kept as long as scheduled_task_retention says).
CREATE OR REPLACE FUNCTION ace.drop_repair_policy_row(owner name, policy_name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    sched text;
BEGIN
    PERFORM ace.check_acts_for(owner, 'repair policies');
    DELETE FROM ace.repair_policies p WHERE p.owner = drop_repair_policy_row.owner AND p.policy_name = drop_repair_policy_row.policy_name
    RETURNING p.schedule_name INTO sched;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF sched IS NOT NULL THEN
        PERFORM ace.change_schedule_row(owner, sched, 'remove');
    END IF;
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION ace.drop_repair_policy(policy_name text) RETURNS boolean LANGUAGE sql AS $$
    SELECT ace.drop_repair_policy_row(current_user, $1)
$$;

-- The caller's policy of that name; an error naming it when there is none.
CREATE OR REPLACE FUNCTION ace.own_repair_policy(policy_name text) RETURNS ace.repair_policies
LANGUAGE plpgsql STABLE AS $$
DECLARE
    p ace.repair_policies;
BEGIN
    SELECT * INTO p FROM ace.repair_policies x WHERE x.owner = current_user AND x.policy_name = own_repair_policy.policy_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role % has no repair policy "%"', current_user, policy_name
            USING ERRCODE = 'no_data_found', HINT = 'SELECT policy_name FROM ace.repair_policies lists yours.';
    END IF;
    RETURN p;
END $$;

-- Pauses or resumes the caller's policy's timer (its schedule); a policy without one has none to
-- pause. Runs by hand are still possible while it is paused.
CREATE OR REPLACE FUNCTION ace.pause_repair_policy(policy_name text) RETURNS ace.schedules LANGUAGE plpgsql AS $$
BEGIN
    RETURN ace.change_schedule_row(current_user, ace.timed_repair_policy(policy_name), 'pause');
END $$;

CREATE OR REPLACE FUNCTION ace.resume_repair_policy(policy_name text) RETURNS ace.schedules LANGUAGE plpgsql AS $$
BEGIN
    RETURN ace.change_schedule_row(current_user, ace.timed_repair_policy(policy_name), 'resume');
END $$;

CREATE OR REPLACE FUNCTION ace.timed_repair_policy(policy_name text) RETURNS text LANGUAGE plpgsql STABLE AS $$
DECLARE
    p ace.repair_policies := ace.own_repair_policy(policy_name);
BEGIN
    IF p.schedule_name IS NULL THEN
        RAISE EXCEPTION 'repair policy "%" has no every or cron, so nothing to pause or resume', policy_name
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'It runs only by ace.run_repair_policy(name).';
    END IF;
    RETURN p.schedule_name;
END $$;

-- Starts a run of the caller's policy now, whatever its timer, and returns the task.
CREATE OR REPLACE FUNCTION ace.run_repair_policy(policy_name text) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args) VALUES ('repair-policy-run', jsonb_build_object('policy_name', policy_name))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

-- The runs of the caller's policy, newest first: by hand and by its timer. Each run's outcome is
-- its result->>'outcome' (FAILED runs have their error).
CREATE OR REPLACE FUNCTION ace.repair_policy_runs(policy_name text) RETURNS SETOF ace.tasks
LANGUAGE sql STABLE AS $$
    SELECT t.* FROM ace.tasks t
    WHERE t.task_type = 'repair-policy-run' AND t.args->>'policy_name' = $1 AND t.submitted_by = current_user
    ORDER BY t.submitted_at DESC
$$;

-- The caller's policies with their timer and their last run, as a DBA checks them.
CREATE OR REPLACE VIEW ace.repair_policy_status WITH (security_invoker = true) AS
SELECT p.owner, p.policy_name, p.table_name, p.strategy, p.trigger, p.dry_run, s.every, s.cron, s.scope,
       coalesce(s.enabled, false) AS enabled, s.next_due,
       last.task_id AS last_run, last.status AS last_status,
       CASE WHEN last.status = 'FAILED' THEN 'failed' ELSE last.result->>'outcome' END AS last_outcome,
       coalesce(last.result->>'reason', last.error) AS last_reason, last.finished_at AS last_finished
FROM ace.repair_policies p
LEFT JOIN ace.schedules s ON s.owner = p.owner AND s.schedule_name = p.schedule_name
LEFT JOIN LATERAL (SELECT t.* FROM ace.tasks t
                   WHERE t.task_type = 'repair-policy-run' AND t.submitted_by = p.owner AND t.args->>'policy_name' = p.policy_name
                   ORDER BY t.submitted_at DESC LIMIT 1) last ON true;
GRANT SELECT ON ace.repair_policy_status TO PUBLIC;

-- A run's arguments: the caller's policy as it is now, checked again (a table dropped or a
-- privilege revoked since refuses the run, and a scheduled run counts as failed), with the nodes
-- to diff resolved. At most one run of a policy is queued or running.
CREATE OR REPLACE FUNCTION ace.validate_repair_policy_run(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    name text := ace.text_arg(args, 'policy_name');
    p ace.repair_policies;
    running uuid;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'policy_name is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    p := ace.own_repair_policy(name);
    PERFORM ace.check_repair_policy(p.table_name, p.strategy, p.source_of_truth, p.repair_plan, p.nodes, p.dry_run,
                                    p.upsert_only, false);
    SELECT t.task_id INTO running FROM ace.tasks t
    WHERE t.task_type = 'repair-policy-run' AND t.submitted_by = current_user AND t.args->>'policy_name' = name
      AND t.status IN ('QUEUED', 'RUNNING')
    LIMIT 1;
    IF running IS NOT NULL THEN
        RAISE EXCEPTION 'repair policy "%" has a run still queued or running (task %)', name, running
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Wait for it with ace.wait(task_id), or cancel it with ace.cancel(task_id).';
    END IF;
    RETURN jsonb_strip_nulls(jsonb_build_object(
        'policy_name', p.policy_name, 'table_name', p.table_name, 'strategy', p.strategy,
        'source_of_truth', p.source_of_truth, 'repair_plan', p.repair_plan, 'nodes', to_jsonb(ace.repair_policy_nodes(p.nodes)),
        'trigger', p.trigger, 'recheck_after', extract(epoch FROM p.recheck_after), 'max_rows', p.max_rows,
        'max_runs_per_hour', p.max_runs_per_hour, 'dry_run', p.dry_run, 'upsert_only', p.upsert_only));
END $$;

-- A run's outcome in one line.
CREATE OR REPLACE FUNCTION ace.describe_policy_run(summary jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN summary IS NULL THEN 'no summary'
        ELSE format('repair policy %s on %s: %s%s', summary->>'policy_name', summary->>'table_name', summary->>'outcome',
            CASE summary->>'outcome'
                WHEN 'repaired' THEN format(' (%s inserted, %s updated, %s deleted; %s key(s) still differ)',
                                            summary->>'inserted', summary->>'updated', summary->>'deleted', summary->>'remaining_keys')
                WHEN 'in_sync' THEN ''
                ELSE ': ' || coalesce(summary->>'reason', '') END)
    END
$$;
