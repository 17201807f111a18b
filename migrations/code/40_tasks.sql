-- The SQL API shared by every task type: nodes, waiting (with or without progress NOTICEs), cancelling.

-- Registers a node, or changes a registered node's connection string and cluster. A new node
-- starts in the given state: active (a default node of every task), or joining (taking part
-- only when named, until ace.promote_node). A registered node keeps its state: ace.promote_node,
-- ace.mark_node_down and ace.mark_node_up change it.
CREATE OR REPLACE FUNCTION ace.add_node(node_name text, conninfo text, cluster_name text DEFAULT 'default',
                                        state text DEFAULT 'active')
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    added boolean;
BEGIN
    IF state IS NULL OR state NOT IN ('active', 'joining') THEN
        RAISE EXCEPTION 'a node is added as active or joining, not %', coalesce(state, 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Add it as joining to let it take part only when named, then ace.promote_node it.';
    END IF;
    INSERT INTO ace.nodes AS n (node_name, conninfo, cluster_name, state)
    VALUES (add_node.node_name, add_node.conninfo, add_node.cluster_name, add_node.state)
    ON CONFLICT ON CONSTRAINT nodes_pkey DO UPDATE SET conninfo = EXCLUDED.conninfo, cluster_name = EXCLUDED.cluster_name
    RETURNING xmax = 0 INTO added;
    IF added THEN
        PERFORM ace.record_event('node_added', add_node.node_name,
                                 detail => jsonb_build_object('state', add_node.state, 'cluster_name', add_node.cluster_name));
    END IF;
END $$;

CREATE OR REPLACE FUNCTION ace.remove_node(node_name text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ace.nodes n WHERE n.node_name = remove_node.node_name;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM ace.record_event('node_removed', remove_node.node_name);
    RETURN true;
END $$;

-- The state functions below change the cluster's shared state: they run as the schema's owner,
-- and only the roles the owner grants them to may call them (GRANT EXECUTE ON FUNCTION
-- ace.mark_node_down(text, text) TO oncall;), through SQL, the CLI or the HTTP shim. The event
-- they record names the caller's login as its actor.

-- A registered node's row, locked for a change of state; an unknown name is an error.
CREATE OR REPLACE FUNCTION ace.node_for_update(node_name text) RETURNS ace.nodes
LANGUAGE plpgsql AS $$
DECLARE
    n ace.nodes;
BEGIN
    SELECT * INTO n FROM ace.nodes x WHERE x.node_name = node_for_update.node_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'node % is not in ace.nodes', node_name
            USING ERRCODE = 'no_data_found', HINT = 'SELECT node_name, state FROM ace.nodes lists the nodes.';
    END IF;
    RETURN n;
END $$;

-- Sets a node's state and records the event; the state functions below decide when.
CREATE OR REPLACE FUNCTION ace.set_node_state(node_name text, state text, reason text, kind text) RETURNS ace.nodes
LANGUAGE plpgsql AS $$
DECLARE
    n ace.nodes;
BEGIN
    UPDATE ace.nodes x SET state = set_node_state.state, state_reason = reason, state_changed_at = now()
    WHERE x.node_name = set_node_state.node_name RETURNING * INTO n;
    PERFORM ace.record_event(kind, node_name, detail => jsonb_strip_nulls(jsonb_build_object('reason', reason)));
    RETURN n;
END $$;

-- A joining node becomes active: a default node of every task.
CREATE OR REPLACE FUNCTION ace.promote_node(node_name text) RETURNS ace.nodes
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    n ace.nodes := ace.node_for_update(node_name);
BEGIN
    IF n.state <> 'joining' THEN
        RAISE EXCEPTION 'node % is %, not joining', node_name, n.state
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = CASE n.state WHEN 'down' THEN format('Mark it up with ace.mark_node_up(%L).', node_name)
                                      ELSE 'It takes part in every task already.' END;
    END IF;
    RETURN ace.set_node_state(node_name, 'active', NULL, 'node_promoted');
END $$;

-- Marks a node down: tasks leave it out of their default nodes and refuse it when named. Marking
-- a down node down again only changes the reason.
CREATE OR REPLACE FUNCTION ace.mark_node_down(node_name text, reason text DEFAULT NULL) RETURNS ace.nodes
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    n ace.nodes := ace.node_for_update(node_name);
BEGIN
    IF n.state = 'down' THEN
        UPDATE ace.nodes x SET state_reason = reason WHERE x.node_name = mark_node_down.node_name RETURNING * INTO n;
        RETURN n;
    END IF;
    RETURN ace.set_node_state(node_name, 'down', reason, 'node_down');
END $$;

-- Marks a down node up again: active, a default node of every task.
CREATE OR REPLACE FUNCTION ace.mark_node_up(node_name text) RETURNS ace.nodes
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    n ace.nodes := ace.node_for_update(node_name);
BEGIN
    IF n.state <> 'down' THEN
        RAISE NOTICE 'node % is % already', node_name, n.state;
        RETURN n;
    END IF;
    RETURN ace.set_node_state(node_name, 'active', NULL, 'node_up');
END $$;

-- overload of ace.mark_node_up: the same change with a resync, at the caller's rights.
-- Marks a down node up (ace.mark_node_up(node_name), which the caller must be granted) and, with
-- resync, submits ace.resync_node(node_name) as the caller, returning its task id (NULL without
-- resync). It runs with the caller's rights, so the resync is the caller's task, logged in as
-- the caller on every node, and sees only the tables the caller may read.
CREATE OR REPLACE FUNCTION ace.mark_node_up(node_name text, resync boolean) RETURNS uuid
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ace.mark_node_up(node_name);
    IF NOT coalesce(resync, false) THEN
        RETURN NULL;
    END IF;
    RETURN ace.resync_node(node_name);
END $$;

REVOKE EXECUTE ON FUNCTION ace.promote_node(text), ace.mark_node_down(text, text), ace.mark_node_up(text),
    ace.node_for_update(text), ace.set_node_state(text, text, text, text) FROM PUBLIC;

-- Blocks until the task reaches a terminal status and returns it: the one wait loop, used by
-- ace.wait callers and by the CALL forms (ace.run_*). It polls, because a function cannot
-- receive notifications: every 10 ms for the first 5 seconds, so a task that ends within them is
-- seen at most about 10 ms late (make bench measures it), then backing off to 250 ms, so a long
-- task costs a look four times a second. With progress_notices it raises a NOTICE whenever the
-- task's progress changes. A NULL timeout waits for as long as it takes.
CREATE OR REPLACE FUNCTION ace.wait(task_id uuid, timeout interval DEFAULT '1 hour', progress_notices boolean DEFAULT false)
RETURNS ace.tasks LANGUAGE plpgsql AS $$
DECLARE
    t ace.tasks;
    deadline timestamptz := clock_timestamp() + timeout;
    started timestamptz := clock_timestamp();
    pause float8 := 0.01;
    last_progress jsonb;
BEGIN
    IF strpos(coalesce(current_setting('ace.uncommitted_tasks', true), ''), task_id::text) > 0 THEN
        RAISE EXCEPTION 'task % was submitted in this transaction and cannot start before it commits', task_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'COMMIT first and call ace.wait in a new transaction, or use CALL ace.run_table_diff(...).';
    END IF;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'ace.wait needs READ COMMITTED isolation: this transaction''s snapshot would never see the task finish'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    LOOP
        SELECT * INTO t FROM ace.tasks x WHERE x.task_id = wait.task_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'task % does not exist', task_id USING ERRCODE = 'no_data_found';
        END IF;
        IF coalesce(progress_notices, false) AND t.progress IS NOT NULL AND t.progress IS DISTINCT FROM last_progress THEN
            RAISE NOTICE '%', ace.describe_progress(t.progress);
            last_progress := t.progress;
        END IF;
        IF t.status IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN
            RETURN t;
        END IF;
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'task % is still % after %', task_id, t.status, timeout
                USING ERRCODE = 'query_canceled', HINT = 'Call ace.wait again, or ace.cancel(task_id) to stop it.';
        END IF;
        PERFORM pg_sleep(pause);
        IF clock_timestamp() - started > interval '5 seconds' THEN
            pause := least(pause * 1.5, 0.25);
        END IF;
    END LOOP;
END $$;

-- Asks the agent to stop a task, and its child tasks. A queued task is cancelled at once.
CREATE OR REPLACE FUNCTION ace.cancel(task_id uuid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    t ace.tasks;
BEGIN
    SELECT * INTO t FROM ace.tasks x WHERE x.task_id = cancel.task_id FOR UPDATE;
    IF NOT FOUND OR NOT pg_has_role(session_user, t.submitted_by, 'MEMBER') THEN
        RAISE EXCEPTION 'task % does not exist', task_id USING ERRCODE = 'no_data_found';
    END IF;
    -- A parent's children go with it (each under the same check of who may cancel it).
    PERFORM ace.cancel(c.task_id) FROM ace.tasks c
        WHERE c.args->>'parent_task' = cancel.task_id::text AND c.args ? 'parent_task' AND c.status IN ('QUEUED', 'RUNNING');
    IF t.status = 'QUEUED' THEN
        UPDATE ace.tasks x SET status = 'CANCELLED', finished_at = clock_timestamp(), error = 'cancelled before it started'
        WHERE x.task_id = cancel.task_id;
        RETURN 'CANCELLED';
    ELSIF t.status = 'RUNNING' THEN
        UPDATE ace.tasks x SET cancel_requested = true WHERE x.task_id = cancel.task_id;
        RETURN 'CANCEL REQUESTED';
    END IF;
    RETURN t.status;
END $$;

-- Progress in one line; parts a task type does not report are left out.
CREATE OR REPLACE FUNCTION ace.describe_progress(progress jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT concat_ws(', ', progress->>'phase',
        CASE WHEN (progress->>'blocks_total')::bigint > 0 THEN format('%s/%s blocks', progress->>'blocks_done', progress->>'blocks_total') END,
        CASE WHEN (progress->>'rows_hashed')::bigint > 0 THEN format('%s rows hashed', progress->>'rows_hashed') END,
        CASE WHEN (progress->>'differing_keys')::bigint > 0 THEN format('%s differing row(s) so far', progress->>'differing_keys') END)
$$;

-- The CALL forms (ace.run_*) share one ending: ace.follow_submitted waits for the task with
-- progress NOTICEs and returns its status, a one-line outcome (ace.describe_task) and its result.
-- The outcome is the short column psql shows beside the result's jsonb.

-- A task's outcome in one line: what a completed task found or did, or why it did not complete.
-- plpgsql, so that it may name the describe functions of the task types' files, made later.
CREATE OR REPLACE FUNCTION ace.describe_task(t ace.tasks) RETURNS text
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF t.status <> 'COMPLETED' THEN
        RETURN format('%s task %s: %s', t.task_type, lower(t.status), coalesce(t.error, 'no error recorded'));
    END IF;
    RETURN CASE t.task_type
        WHEN 'table-diff' THEN ace.describe_diff(t.result)
        WHEN 'mtree-diff' THEN ace.describe_diff(t.result)
        WHEN 'table-rerun' THEN CASE WHEN (t.result->>'differing_keys')::bigint = 0
                                     THEN 'all previously reported differences have been resolved'
                                     ELSE ace.describe_diff(t.result) END
        WHEN 'table-repair' THEN ace.describe_repair(t.result)
        WHEN 'mtree-build' THEN format('Merkle tree of %s built on %s (%s leaves on %s)', t.result->>'table_name',
                                       (SELECT string_agg(n, ', ') FROM jsonb_array_elements_text(t.result->'nodes') n),
                                       t.result->>'leaves', t.result->>'reference_node')
        WHEN 'schema-diff' THEN ace.describe_schema_diff(t.result)
        WHEN 'repset-diff' THEN ace.describe_repset_diff(t.result)
        WHEN 'node-resync' THEN ace.describe_resync(t.result)
        WHEN 'repair-policy-run' THEN ace.describe_policy_run(t.result)
        ELSE format('%s task completed', t.task_type)
    END;
END $$;

-- Where to look next after a task, as a CALL form's last NOTICE; NULL when there is nothing more.
CREATE OR REPLACE FUNCTION ace.task_next_step(t ace.tasks) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN t.task_type = 'table-repair' THEN format('see what each node got with: SELECT * FROM ace.repair_rows(%L);', t.task_id)
        WHEN t.status <> 'COMPLETED' THEN NULL
        WHEN t.task_type = 'table-rerun' AND (t.result->>'differing_keys')::bigint > 0
            THEN format('see the rows with: SELECT * FROM ace.diff_rows(%L); repair them with ace.table_repair(%L, ...)', t.task_id, t.task_id)
        WHEN t.task_type IN ('table-diff', 'mtree-diff') AND (t.result->>'differing_keys')::bigint > 0
            THEN format('see the rows with: SELECT * FROM ace.diff_rows(%L);', t.task_id)
        WHEN t.task_type = 'schema-diff' AND t.result->>'compare' <> 'data' AND (t.result->>'findings')::int > 0
            THEN format('see the findings with: SELECT * FROM ace.schema_diff_rows(%L);', t.task_id)
    END
$$;

-- Waits for a task that a CALL form submitted and committed, raising a NOTICE whenever its
-- progress changes, then its outcome (a WARNING when it did not complete) and where to look next.
CREATE OR REPLACE PROCEDURE ace.follow_submitted(task_id uuid, INOUT status text, INOUT outcome text, INOUT summary jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    t ace.tasks := ace.wait(task_id, timeout => NULL, progress_notices => true);
    next_step text := ace.task_next_step(t);
BEGIN
    status := t.status;
    summary := t.result;
    outcome := ace.describe_task(t);
    IF status = 'COMPLETED' THEN
        RAISE NOTICE '%', outcome;
    ELSE
        RAISE WARNING '%', outcome;
    END IF;
    IF next_step IS NOT NULL THEN
        RAISE NOTICE '%', next_step;
    END IF;
END $$;

-- Deletes up to batch finished tasks (COMPLETED, FAILED, CANCELLED) that finished longer than
-- task_retention ago (scheduled_task_retention for the runs of a schedule, which come back on
-- their own), oldest first, with their results (ON DELETE CASCADE), and returns how many it
-- deleted; none when neither setting is set. A task that a queued or running task names as
-- its diff (a repair, a rerun), or that built a Merkle tree still there, is kept. Run by the
-- agent's retention job, as the schema's owner.
CREATE OR REPLACE FUNCTION ace.delete_expired_tasks(batch int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    keep interval := ace.setting('task_retention')::interval;
    keep_scheduled interval := coalesce(ace.setting('scheduled_task_retention')::interval, keep);
    deleted int;
BEGIN
    IF keep IS NULL AND keep_scheduled IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM ace.tasks t WHERE t.task_id IN (
        SELECT o.task_id FROM ace.tasks o
        WHERE o.status IN ('COMPLETED', 'FAILED', 'CANCELLED')
          AND o.finished_at < clock_timestamp() - CASE WHEN o.args ? 'schedule' THEN keep_scheduled ELSE keep END
          AND NOT EXISTS (SELECT 1 FROM ace.tasks w WHERE w.status IN ('QUEUED', 'RUNNING') AND w.args->>'diff_task' = o.task_id::text)
          AND NOT EXISTS (SELECT 1 FROM ace.mtrees m WHERE m.build_task = o.task_id)
        ORDER BY o.finished_at
        LIMIT batch
        FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    RETURN deleted;
END $$;
REVOKE EXECUTE ON FUNCTION ace.delete_expired_tasks(int) FROM PUBLIC;
