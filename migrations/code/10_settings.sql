-- Settings: the checks and readers of ace.settings, whose limits keep one role from taking the
-- queue or the agents for itself, and which hold the cluster's schedules and retention.

-- Every known setting and the kind of value it takes: a count (a whole number of at least 1),
-- an interval (positive), or a time zone. One row per setting, so adding one is one line.
CREATE OR REPLACE FUNCTION ace.setting_kinds() RETURNS TABLE (name text, kind text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('max_queued_tasks_per_role', 'count'),
           ('max_running_tasks_per_role', 'count'),
           ('max_task_runtime', 'interval'),
           ('max_recheck_after', 'interval'),
           ('max_cdc_timeout', 'interval'),
           ('task_retention', 'interval'),
           ('scheduled_task_retention', 'interval'),
           ('event_retention', 'interval'),
           ('min_schedule_interval', 'interval'),
           ('table_status_max_age', 'interval'),
           ('schedule_timezone', 'timezone')
$$;

-- Refuses a value a setting cannot take, naming the setting.
CREATE OR REPLACE FUNCTION ace.check_setting(name text, value text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    span interval;
BEGIN
    CASE (SELECT k.kind FROM ace.setting_kinds() k WHERE k.name = check_setting.name)
    WHEN 'count' THEN
        IF value !~ '^\s*[0-9]{1,9}\s*$' OR NOT value ~ '[1-9]' THEN
            RAISE EXCEPTION 'setting % must be a whole number of at least 1, got "%"', name, value
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN 'interval' THEN
        BEGIN
            span := value::interval;
        EXCEPTION WHEN data_exception OR syntax_error THEN
            span := NULL;
        END;
        IF span IS NULL OR span <= interval '0' THEN
            RAISE EXCEPTION 'setting % must be a positive interval such as ''12 hours'', got "%"', name, value
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    WHEN 'timezone' THEN
        IF NOT EXISTS (SELECT 1 FROM pg_timezone_names z WHERE z.name = value) THEN
            RAISE EXCEPTION 'setting % must be a time zone name such as ''UTC'' or ''Europe/Paris'', got "%"', name, value
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'SELECT name FROM pg_timezone_names lists them.';
        END IF;
    ELSE
        RAISE EXCEPTION 'unknown setting "%"', name
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known settings: ' || (SELECT string_agg(k.name, ', ') FROM ace.setting_kinds() k) || '.';
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
