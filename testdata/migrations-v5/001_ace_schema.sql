-- The ace schema: the task queue, the cluster as this node sees it, the agents, and diff results.
-- Everything a user can do is a function here; the agent only claims rows and writes results.

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
GRANT SELECT, INSERT ON ace.tasks TO PUBLIC;

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

---- Notifications. The table is the truth; these only wake listeners.

CREATE FUNCTION ace.tasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('ace_task', NEW.task_id::text);
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        IF NEW.status IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN
            PERFORM pg_notify('ace_task_done', NEW.task_id::text);
        ELSIF NEW.status = 'QUEUED' THEN
            PERFORM pg_notify('ace_task', NEW.task_id::text);
        END IF;
    ELSIF NEW.cancel_requested AND NOT OLD.cancel_requested THEN
        PERFORM pg_notify('ace_task_cancel', NEW.task_id::text);
    ELSIF NEW.progress IS DISTINCT FROM OLD.progress THEN
        PERFORM pg_notify('ace_task_progress', NEW.task_id::text);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_notify AFTER INSERT OR UPDATE ON ace.tasks
    FOR EACH ROW EXECUTE FUNCTION ace.tasks_notify();

---- Submission checks. They run for every insert, whoever makes it: a SQL function, an
---- application's own INSERT, or the HTTP shim.

-- Resolves a table name to its quoted, schema-qualified form and checks that the submitting role
-- can diff it.
CREATE FUNCTION ace.resolve_table(table_name text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    rel regclass;
    kind "char";
BEGIN
    IF table_name IS NULL OR btrim(table_name) = '' THEN
        RAISE EXCEPTION 'table_name is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
        rel := to_regclass(table_name);
    EXCEPTION WHEN invalid_name OR syntax_error THEN
        RAISE EXCEPTION 'invalid table name "%"', table_name
            USING ERRCODE = 'invalid_name', HINT = 'Write it as schema.table; quote mixed-case names: public."Orders".';
    END;
    IF rel IS NULL THEN
        RAISE EXCEPTION 'table "%" does not exist on this node', table_name
            USING ERRCODE = 'undefined_table', HINT = 'Check the name and the schema, for example public.orders.';
    END IF;
    SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = rel;
    IF kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '"%" is not a table', table_name USING ERRCODE = 'wrong_object_type';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = rel AND i.indisprimary) THEN
        RAISE EXCEPTION 'table % has no primary key', rel::text
            USING ERRCODE = 'invalid_table_definition',
                  HINT = 'ace-agent compares rows by primary key; add one with ALTER TABLE ... ADD PRIMARY KEY.';
    END IF;
    IF NOT has_table_privilege(current_user, rel, 'SELECT') THEN
        RAISE EXCEPTION 'permission denied: role % cannot read table %', current_user, rel::text
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN format('%I.%I', (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel),
                           (SELECT c.relname FROM pg_class c WHERE c.oid = rel));
END $$;

-- Expands NULL to every registered node, drops duplicates, and rejects unknown names.
CREATE FUNCTION ace.resolve_nodes(nodes text[]) RETURNS text[]
LANGUAGE plpgsql STABLE AS $$
DECLARE
    resolved text[];
    unknown text[];
BEGIN
    IF nodes IS NULL OR cardinality(nodes) = 0 OR nodes = ARRAY['all'] THEN
        SELECT coalesce(array_agg(node_name ORDER BY node_name), '{}') INTO resolved FROM ace.nodes;
    ELSE
        SELECT array_agg(DISTINCT btrim(n)) INTO resolved FROM unnest(nodes) n;
        SELECT array_agg(n ORDER BY n) INTO unknown
            FROM unnest(resolved) n WHERE NOT EXISTS (SELECT 1 FROM ace.nodes x WHERE x.node_name = n);
        IF unknown IS NOT NULL THEN
            RAISE EXCEPTION 'unknown node(s): %', array_to_string(unknown, ', ')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Registered nodes are listed in ace.nodes; add one with ace.add_node(name, conninfo).';
        END IF;
        SELECT array_agg(n ORDER BY n) INTO resolved FROM unnest(resolved) n;
    END IF;
    IF cardinality(resolved) < 2 THEN
        RAISE EXCEPTION 'a diff needs at least 2 nodes, got %', coalesce(array_to_string(resolved, ', '), 'none')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Register the cluster''s nodes with ace.add_node(name, conninfo) on this node.';
    END IF;
    RETURN resolved;
END $$;

CREATE FUNCTION ace.check_positive(args jsonb, key text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF args ? key AND args->key <> 'null'::jsonb THEN
        IF jsonb_typeof(args->key) <> 'number' OR (args->>key)::numeric <= 0 OR (args->>key)::numeric <> trunc((args->>key)::numeric) THEN
            RAISE EXCEPTION '% must be a positive integer, got %', key, args->key USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
END $$;

-- Normalises and validates a task's arguments before it is queued.
CREATE FUNCTION ace.tasks_validate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.submitted_by := current_user;
    NEW.status := 'QUEUED';
    NEW.args := coalesce(NEW.args, '{}');
    IF jsonb_typeof(NEW.args) <> 'object' THEN
        RAISE EXCEPTION 'task args must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    CASE NEW.task_type
    WHEN 'table-diff' THEN
        NEW.args := NEW.args
            || jsonb_build_object('table_name', ace.resolve_table(NEW.args->>'table_name'))
            || jsonb_build_object('nodes', to_jsonb(ace.resolve_nodes(
                   CASE WHEN jsonb_typeof(NEW.args->'nodes') = 'array'
                        THEN ARRAY(SELECT jsonb_array_elements_text(NEW.args->'nodes')) END)));
        PERFORM ace.check_positive(NEW.args, k) FROM unnest(ARRAY['block_size', 'max_diff_rows', 'compare_unit_size']) k;
        IF jsonb_typeof(NEW.args->'table_filter') NOT IN ('string', 'null') THEN
            RAISE EXCEPTION 'table_filter must be a string' USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown task type "%"', NEW.task_type
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Known task types: table-diff.';
    END CASE;
    -- ace.wait uses this to refuse waiting on a task its own transaction has not committed.
    PERFORM set_config('ace.uncommitted_tasks',
                       coalesce(current_setting('ace.uncommitted_tasks', true), '') || NEW.task_id::text || ' ', true);
    RETURN NEW;
END $$;
CREATE TRIGGER tasks_validate BEFORE INSERT ON ace.tasks
    FOR EACH ROW EXECUTE FUNCTION ace.tasks_validate();

---- The SQL API.

CREATE FUNCTION ace.add_node(node_name text, conninfo text, cluster_name text DEFAULT 'default')
RETURNS void LANGUAGE sql AS $$
    INSERT INTO ace.nodes (node_name, conninfo, cluster_name) VALUES ($1, $2, $3)
    ON CONFLICT ON CONSTRAINT nodes_pkey DO UPDATE SET conninfo = EXCLUDED.conninfo, cluster_name = EXCLUDED.cluster_name;
$$;

CREATE FUNCTION ace.remove_node(node_name text) RETURNS boolean LANGUAGE sql AS $$
    WITH d AS (DELETE FROM ace.nodes n WHERE n.node_name = $1 RETURNING 1) SELECT EXISTS (SELECT 1 FROM d);
$$;

CREATE FUNCTION ace.table_diff(
    table_name text,
    nodes text[] DEFAULT NULL,
    block_size int DEFAULT NULL,
    table_filter text DEFAULT NULL,
    max_diff_rows bigint DEFAULT NULL,
    compare_unit_size int DEFAULT NULL
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    id uuid;
BEGIN
    INSERT INTO ace.tasks (task_type, args)
    VALUES ('table-diff', jsonb_strip_nulls(jsonb_build_object(
        'table_name', table_name, 'nodes', nodes, 'block_size', block_size,
        'table_filter', table_filter, 'max_diff_rows', max_diff_rows, 'compare_unit_size', compare_unit_size)))
    RETURNING task_id INTO id;
    RETURN id;
END $$;

-- Blocks until the task reaches a terminal status. It polls, because a function cannot receive
-- notifications; the poll interval backs off to 250 ms.
CREATE FUNCTION ace.wait(task_id uuid, timeout interval DEFAULT '1 hour') RETURNS ace.tasks
LANGUAGE plpgsql AS $$
DECLARE
    t ace.tasks;
    deadline timestamptz := clock_timestamp() + timeout;
    pause float8 := 0.01;
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

-- Asks the agent to stop a task. A queued task is cancelled at once.
CREATE FUNCTION ace.cancel(task_id uuid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    t ace.tasks;
BEGIN
    SELECT * INTO t FROM ace.tasks x WHERE x.task_id = cancel.task_id FOR UPDATE;
    IF NOT FOUND OR NOT pg_has_role(session_user, t.submitted_by, 'MEMBER') THEN
        RAISE EXCEPTION 'task % does not exist', task_id USING ERRCODE = 'no_data_found';
    END IF;
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

CREATE FUNCTION ace.diff_rows(task_id uuid)
RETURNS TABLE (pk jsonb, kind text, rows jsonb)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = diff_rows.task_id) THEN
        RAISE EXCEPTION 'task % does not exist', task_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN QUERY SELECT d.pk, d.kind, d.rows FROM ace.diff_results d WHERE d.task_id = diff_rows.task_id ORDER BY d.pk_sort, d.row_no;
END $$;

-- A one-line account of a diff's summary, for NOTICEs and the CLI.
CREATE FUNCTION ace.describe_diff(summary jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN summary IS NULL THEN 'no summary'
        WHEN coalesce((SELECT sum(value::bigint) FROM jsonb_each_text(summary->'diff_rows_count')), 0) = 0
            THEN format('%s: in sync on %s (%s rows checked)', summary->>'table_name',
                        (SELECT string_agg(n, ', ') FROM jsonb_array_elements_text(summary->'nodes') n),
                        summary->>'total_rows_checked')
        ELSE format('%s: %s differing row(s) (%s); %s rows checked',
                    summary->>'table_name', summary->>'differing_keys',
                    (SELECT string_agg(key || ' ' || value, ', ' ORDER BY key) FROM jsonb_each_text(summary->'diff_rows_count') WHERE value::bigint > 0),
                    summary->>'total_rows_checked')
    END
$$;

CREATE FUNCTION ace.describe_progress(progress jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT concat_ws(', ', progress->>'phase',
        CASE WHEN progress ? 'blocks_total' THEN format('%s/%s blocks', progress->>'blocks_done', progress->>'blocks_total') END,
        CASE WHEN progress ? 'rows_hashed' THEN format('%s rows hashed', progress->>'rows_hashed') END,
        CASE WHEN (progress->>'differing_keys')::bigint > 0 THEN format('%s differing row(s) so far', progress->>'differing_keys') END)
$$;

-- Submits a diff, commits it, and waits, raising a NOTICE whenever progress changes. It must be
-- called outside a transaction block, because it commits.
CREATE PROCEDURE ace.run_table_diff(
    table_name text,
    nodes text[] DEFAULT NULL,
    block_size int DEFAULT NULL,
    table_filter text DEFAULT NULL,
    max_diff_rows bigint DEFAULT NULL,
    compare_unit_size int DEFAULT NULL,
    INOUT task_id uuid DEFAULT NULL,
    INOUT status text DEFAULT NULL,
    INOUT differing_rows bigint DEFAULT NULL,
    INOUT summary jsonb DEFAULT NULL
) LANGUAGE plpgsql AS $$
DECLARE
    t ace.tasks;
    last_progress jsonb;
BEGIN
    task_id := ace.table_diff(table_name, nodes, block_size, table_filter, max_diff_rows, compare_unit_size);
    RAISE NOTICE 'submitted table-diff task %', task_id;
    COMMIT;
    LOOP
        SELECT * INTO t FROM ace.tasks x WHERE x.task_id = run_table_diff.task_id;
        IF t.progress IS DISTINCT FROM last_progress AND t.progress IS NOT NULL THEN
            RAISE NOTICE '%', ace.describe_progress(t.progress);
            last_progress := t.progress;
        END IF;
        EXIT WHEN t.status IN ('COMPLETED', 'FAILED', 'CANCELLED');
        PERFORM pg_sleep(0.2);
    END LOOP;
    status := t.status;
    summary := t.result;
    IF t.status = 'COMPLETED' THEN
        differing_rows := (t.result->>'differing_keys')::bigint;
        RAISE NOTICE '%', ace.describe_diff(t.result);
        IF differing_rows > 0 THEN
            RAISE NOTICE 'see the rows with: SELECT * FROM ace.diff_rows(''%'');', task_id;
        END IF;
    ELSE
        RAISE WARNING 'table-diff task % %: %', task_id, t.status, t.error;
    END IF;
END $$;
