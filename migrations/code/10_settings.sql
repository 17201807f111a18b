-- Settings: the checks and readers of ace.settings, whose limits keep one role from taking the
-- queue or the agents for itself.

-- Refuses a value a setting cannot take, naming the setting.
CREATE OR REPLACE FUNCTION ace.check_setting(name text, value text) RETURNS boolean
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
    WHEN 'max_task_runtime', 'max_recheck_after', 'max_cdc_timeout', 'task_retention' THEN
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
                  HINT = 'Known settings: max_queued_tasks_per_role, max_running_tasks_per_role, max_task_runtime, max_recheck_after, max_cdc_timeout, task_retention.';
    END CASE;
    RETURN true;
END $$;

-- A setting's value, NULL when its row is missing.
CREATE OR REPLACE FUNCTION ace.setting(name text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT s.value FROM ace.settings s WHERE s.name = setting.name
$$;

-- How to change a setting, for hints.
CREATE OR REPLACE FUNCTION ace.setting_hint(name text, example text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('The limit is the row %s of ace.settings; the owner of the ace schema can change it: UPDATE ace.settings SET value = %L WHERE name = %L;',
                  name, example, name)
$$;
