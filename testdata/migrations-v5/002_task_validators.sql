-- Each task type validates its own arguments in ace.validate_<type>(args jsonb) RETURNS jsonb,
-- which returns the normalised arguments or raises. A later migration adds a task type by
-- adding its validator, without rewriting the shared trigger.

CREATE FUNCTION ace.validate_table_diff(args jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    args := args
        || jsonb_build_object('table_name', ace.resolve_table(args->>'table_name'))
        || jsonb_build_object('nodes', to_jsonb(ace.resolve_nodes(
               CASE WHEN jsonb_typeof(args->'nodes') = 'array'
                    THEN ARRAY(SELECT jsonb_array_elements_text(args->'nodes')) END)));
    PERFORM ace.check_positive(args, k) FROM unnest(ARRAY['block_size', 'max_diff_rows', 'compare_unit_size']) k;
    IF jsonb_typeof(args->'table_filter') NOT IN ('string', 'null') THEN
        RAISE EXCEPTION 'table_filter must be a string' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN args;
END $$;

CREATE OR REPLACE FUNCTION ace.tasks_validate() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    validator regprocedure;
BEGIN
    NEW.submitted_by := current_user;
    NEW.status := 'QUEUED';
    NEW.args := coalesce(NEW.args, '{}');
    IF jsonb_typeof(NEW.args) <> 'object' THEN
        RAISE EXCEPTION 'task args must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    validator := to_regprocedure(format('ace.%I(jsonb)', 'validate_' || replace(coalesce(NEW.task_type, ''), '-', '_')));
    IF validator IS NULL THEN
        RAISE EXCEPTION 'unknown task type "%"', NEW.task_type
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known task types: ' || (SELECT string_agg(replace(substr(proname, 10), '_', '-'), ', ' ORDER BY proname)
                                                 FROM pg_proc WHERE pronamespace = 'ace'::regnamespace AND proname LIKE 'validate\_%');
    END IF;
    EXECUTE format('SELECT %s($1)', validator::oid::regproc) INTO NEW.args USING NEW.args;
    -- ace.wait uses this to refuse waiting on a task its own transaction has not committed.
    PERFORM set_config('ace.uncommitted_tasks',
                       coalesce(current_setting('ace.uncommitted_tasks', true), '') || NEW.task_id::text || ' ', true);
    RETURN NEW;
END $$;
