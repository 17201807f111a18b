-- The SQL API shared by every task type: nodes, waiting (with or without progress NOTICEs), cancelling.

CREATE OR REPLACE FUNCTION ace.add_node(node_name text, conninfo text, cluster_name text DEFAULT 'default')
RETURNS void LANGUAGE sql AS $$
    INSERT INTO ace.nodes (node_name, conninfo, cluster_name) VALUES ($1, $2, $3)
    ON CONFLICT ON CONSTRAINT nodes_pkey DO UPDATE SET conninfo = EXCLUDED.conninfo, cluster_name = EXCLUDED.cluster_name;
$$;

CREATE OR REPLACE FUNCTION ace.remove_node(node_name text) RETURNS boolean LANGUAGE sql AS $$
    WITH d AS (DELETE FROM ace.nodes n WHERE n.node_name = $1 RETURNING 1) SELECT EXISTS (SELECT 1 FROM d);
$$;

-- Blocks until the task reaches a terminal status and returns it: the one wait loop, used by
-- ace.wait callers and by the CALL forms (ace.run_*). It polls, because a function cannot
-- receive notifications; the poll interval backs off to 250 ms. With progress_notices it raises
-- a NOTICE whenever the task's progress changes. A NULL timeout waits for as long as it takes.
CREATE OR REPLACE FUNCTION ace.wait(task_id uuid, timeout interval DEFAULT '1 hour', progress_notices boolean DEFAULT false)
RETURNS ace.tasks LANGUAGE plpgsql AS $$
DECLARE
    t ace.tasks;
    deadline timestamptz := clock_timestamp() + timeout;
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
        pause := least(pause * 2, 0.25);
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
