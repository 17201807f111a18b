-- What depends on the functions above: the triggers of ace.tasks and the CHECK of ace.settings.
-- Each is (re)made only when it is missing or differs from its definition here, so a routine
-- install takes no lock on the tables. Triggers of one event fire in name order:
-- tasks_server_values sets the server-managed columns, tasks_validate normalises the arguments
-- (and records the final task id), tasks_within_limits applies the per-role limits.
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('tasks_notify', 'CREATE TRIGGER tasks_notify AFTER INSERT OR UPDATE ON ace.tasks FOR EACH ROW EXECUTE FUNCTION ace.tasks_notify()'),
        ('tasks_server_values', 'CREATE TRIGGER tasks_server_values BEFORE INSERT ON ace.tasks FOR EACH ROW EXECUTE FUNCTION ace.tasks_server_values()'),
        ('tasks_validate', 'CREATE TRIGGER tasks_validate BEFORE INSERT ON ace.tasks FOR EACH ROW EXECUTE FUNCTION ace.tasks_validate()'),
        ('tasks_within_limits', 'CREATE TRIGGER tasks_within_limits BEFORE INSERT ON ace.tasks FOR EACH ROW EXECUTE FUNCTION ace.tasks_within_limits()')
    ) AS v(name, ddl) LOOP
        IF (SELECT pg_get_triggerdef(g.oid) FROM pg_trigger g WHERE g.tgrelid = 'ace.tasks'::regclass AND g.tgname = t.name)
           IS DISTINCT FROM t.ddl THEN
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON ace.tasks', t.name);
            EXECUTE t.ddl;
        END IF;
    END LOOP;

    -- A setting's value must be one ace.check_setting accepts.
    IF NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conrelid = 'ace.settings'::regclass AND c.conname = 'setting_value_valid') THEN
        ALTER TABLE ace.settings ADD CONSTRAINT setting_value_valid CHECK (ace.check_setting(name, value));
    END IF;
END $$;
