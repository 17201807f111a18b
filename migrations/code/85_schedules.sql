-- Schedules: cron expressions (ace.cron_parse, ace.cron_next), the owner's functions
-- (ace.schedule, ace.unschedule, ace.pause_schedule, ace.resume_schedule, ace.run_schedule,
-- ace.schedule_runs) and the firing (ace.fire_schedule), which the agent calls in a session logged
-- in as the schedule's owner, and ace.run_schedule in the caller's.
--
-- ace.schedules is written only by the SECURITY DEFINER functions below whose names end in
-- _schedule_row or start with schedule_run_; each takes the owner and refuses a login that is not
-- a member of it (as ace.cancel does), so a role changes only its own schedules.

-- ---------------------------------------------------------------------------------------------
-- Cron: five fields (minute hour day-of-month month day-of-week) with Vixie cron's semantics:
-- lists, ranges, steps (also on a single value: 5/15 is 5-59/15), month and day names, 0 or 7
-- for Sunday, and, when both day fields are restricted (neither starts with '*'), a day that
-- matches either. The @yearly, @annually, @monthly, @weekly, @daily, @midnight and @hourly
-- shorthands are read as their five fields.

-- One field's values, sorted; star says the field starts with '*' (Vixie's test for "not
-- restricted", so */2 in a day field still ANDs with the other day field).
CREATE OR REPLACE FUNCTION ace.cron_field(expr text, field text, spec text, lo int, hi int, names text[] DEFAULT NULL,
                                          open_hi int DEFAULT NULL, OUT vals int[], OUT star boolean)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    item text;
    parts text[];
    bounds text[];
    a int;
    b int;
    step int;
    v int;
    bad text;
BEGIN
    star := left(spec, 1) = '*';
    vals := '{}';
    IF spec IS NULL OR spec = '' THEN
        bad := 'it is empty';
    END IF;
    FOREACH item IN ARRAY coalesce(string_to_array(spec, ','), '{}') LOOP
        EXIT WHEN bad IS NOT NULL;
        parts := string_to_array(item, '/');
        IF cardinality(parts) NOT IN (1, 2) OR coalesce(parts[1], '') = '' THEN
            bad := format('"%s" is not a value, a range or a step', item);
            EXIT;
        END IF;
        step := 1;
        IF cardinality(parts) = 2 THEN
            IF parts[2] !~ '^[0-9]{1,4}$' OR parts[2]::int = 0 THEN
                bad := format('step "%s" must be a whole number of at least 1', parts[2]);
                EXIT;
            END IF;
            step := parts[2]::int;
        END IF;
        IF parts[1] = '*' THEN
            a := lo; b := hi;
        ELSE
            bounds := string_to_array(parts[1], '-');
            IF cardinality(bounds) > 2 THEN
                bad := format('"%s" is not a value or a range', parts[1]);
                EXIT;
            END IF;
            a := ace.cron_value(bounds[1], lo, hi, names);
            b := CASE WHEN cardinality(bounds) = 2 THEN ace.cron_value(bounds[2], lo, hi, names)
                      WHEN cardinality(parts) = 2 THEN coalesce(open_hi, hi)    -- 5/15 means 5-59/15
                      ELSE a END;
            IF a IS NULL OR b IS NULL THEN
                bad := format('"%s" is not a value from %s to %s%s', parts[1], lo, hi,
                              CASE WHEN names IS NOT NULL THEN ' or a name (' || array_to_string(names, ', ') || ')' ELSE '' END);
                EXIT;
            END IF;
            IF a > b THEN
                bad := format('range "%s" runs backwards', parts[1]);
                EXIT;
            END IF;
        END IF;
        v := a;
        WHILE v <= b LOOP
            vals := vals || v;
            v := v + step;
        END LOOP;
    END LOOP;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'invalid % field "%" in cron expression "%": %', field, spec, expr, bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A cron expression has five fields: minute (0-59) hour (0-23) day-of-month (1-31) month (1-12 or jan-dec) day-of-week (0-7 or sun-sat), for example ''30 2 * * mon-fri''.';
    END IF;
    SELECT array_agg(DISTINCT x ORDER BY x) INTO vals FROM unnest(vals) x;
END $$;

-- A number in [lo, hi], or a name of names (the first name is lo); NULL when it is neither.
CREATE OR REPLACE FUNCTION ace.cron_value(token text, lo int, hi int, names text[]) RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN token ~ '^[0-9]{1,4}$' AND token::int BETWEEN lo AND hi THEN token::int
        WHEN array_position(names, lower(token)) IS NOT NULL THEN lo + array_position(names, lower(token)) - 1
    END
$$;

-- A cron expression's fields. wildcard: the minute or the hour field starts with '*', which
-- decides what happens around a daylight-saving change (see ace.cron_next).
CREATE OR REPLACE FUNCTION ace.cron_parse(cron text,
    OUT minutes int[], OUT hours int[], OUT days int[], OUT months int[], OUT weekdays int[],
    OUT days_star boolean, OUT weekdays_star boolean, OUT wildcard boolean)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    expr text := btrim(coalesce(cron, ''));
    f text[];
    star boolean;
BEGIN
    expr := CASE lower(expr)
        WHEN '@yearly' THEN '0 0 1 1 *' WHEN '@annually' THEN '0 0 1 1 *' WHEN '@monthly' THEN '0 0 1 * *'
        WHEN '@weekly' THEN '0 0 * * 0' WHEN '@daily' THEN '0 0 * * *' WHEN '@midnight' THEN '0 0 * * *'
        WHEN '@hourly' THEN '0 * * * *' ELSE expr END;
    f := regexp_split_to_array(expr, '\s+');
    IF cardinality(f) <> 5 THEN
        RAISE EXCEPTION 'cron expression "%" has % field(s), not 5', cron, CASE WHEN expr = '' THEN 0 ELSE cardinality(f) END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Give minute hour day-of-month month day-of-week, for example ''0 3 * * *'' for 03:00 every day.';
    END IF;
    SELECT x.vals, x.star INTO minutes, star FROM ace.cron_field(cron, 'minute', f[1], 0, 59) x;
    wildcard := star;
    SELECT x.vals, x.star INTO hours, star FROM ace.cron_field(cron, 'hour', f[2], 0, 23) x;
    wildcard := wildcard OR star;
    SELECT x.vals, x.star INTO days, days_star FROM ace.cron_field(cron, 'day-of-month', f[3], 1, 31) x;
    SELECT x.vals INTO months FROM ace.cron_field(cron, 'month', f[4], 1, 12,
        ARRAY['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']) x;
    SELECT x.vals, x.star INTO weekdays, weekdays_star FROM ace.cron_field(cron, 'day-of-week', f[5], 0, 7,
        ARRAY['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], 6) x;   -- 1/2 is 1-6/2: Sunday is 0
    IF 7 = ANY (weekdays) THEN   -- 7 is Sunday too
        SELECT array_agg(DISTINCT x % 7 ORDER BY x % 7) INTO weekdays FROM unnest(weekdays) x;
    END IF;
    -- A day of the month that no chosen month has would never come: refused, as a schedule that
    -- never runs. (With both day fields restricted a day of the week can still match.)
    IF (days_star OR weekdays_star) AND NOT EXISTS (
        SELECT 1 FROM unnest(days) d, unnest(months) m
        WHERE d <= extract(day FROM make_date(2000, m, 1) + interval '1 month' - interval '1 day')) THEN
        RAISE EXCEPTION 'cron expression "%" never matches: no month of its month field has a day % of its day-of-month field', cron, f[3]
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Check the day-of-month and month fields.';
    END IF;
END $$;

-- The first wall-clock minute after w that the fields match (a timestamp without time zone: the
-- search is on the calendar, the time zone comes later).
CREATE OR REPLACE FUNCTION ace.cron_next_wall(minutes int[], hours int[], days int[], months int[], weekdays int[],
                                              days_star boolean, weekdays_star boolean, w timestamp)
RETURNS timestamp LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    t timestamp := date_trunc('minute', w) + interval '1 minute';
    limit_at timestamp := w + interval '30 years';
    next_value int;
    day_ok boolean;
BEGIN
    WHILE t < limit_at LOOP
        IF NOT extract(month FROM t)::int = ANY (months) THEN
            t := date_trunc('month', t) + interval '1 month';
            CONTINUE;
        END IF;
        IF days_star OR weekdays_star THEN
            day_ok := extract(day FROM t)::int = ANY (days) AND extract(dow FROM t)::int = ANY (weekdays);
        ELSE
            day_ok := extract(day FROM t)::int = ANY (days) OR extract(dow FROM t)::int = ANY (weekdays);
        END IF;
        IF NOT day_ok THEN
            t := date_trunc('day', t) + interval '1 day';
            CONTINUE;
        END IF;
        IF NOT extract(hour FROM t)::int = ANY (hours) THEN
            SELECT min(h) INTO next_value FROM unnest(hours) h WHERE h > extract(hour FROM t);
            t := CASE WHEN next_value IS NULL THEN date_trunc('day', t) + interval '1 day'
                      ELSE date_trunc('day', t) + make_interval(hours => next_value) END;
            CONTINUE;
        END IF;
        IF NOT extract(minute FROM t)::int = ANY (minutes) THEN
            SELECT min(m) INTO next_value FROM unnest(minutes) m WHERE m > extract(minute FROM t);
            t := CASE WHEN next_value IS NULL THEN date_trunc('hour', t) + interval '1 hour'
                      ELSE date_trunc('hour', t) + make_interval(mins => next_value) END;
            CONTINUE;
        END IF;
        RETURN t;
    END LOOP;
    RETURN NULL;
END $$;

-- The zone's offset from UTC at an instant.
CREATE OR REPLACE FUNCTION ace.tz_offset(at timestamptz, tz text) RETURNS interval
LANGUAGE sql IMMUTABLE AS $$
    SELECT (at AT TIME ZONE tz) - (at AT TIME ZONE 'UTC')
$$;

-- The instants at which the wall-clock time w happens in zone tz, as cron runs a job then: one
-- usually; the first of two in the hour repeated when clocks go back, and also the second for a
-- wildcard job (Vixie cron runs only wildcard jobs in the repeated hour); for a time skipped when
-- clocks go forward, the instant of the change for a fixed-time job (Vixie cron runs them at
-- once after the jump) and none for a wildcard job.
CREATE OR REPLACE FUNCTION ace.cron_instants(w timestamp, tz text, wildcard boolean) RETURNS timestamptz[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    before_offset interval := ace.tz_offset((w AT TIME ZONE 'UTC') - interval '36 hours', tz);
    after_offset interval := ace.tz_offset((w AT TIME ZONE 'UTC') + interval '36 hours', tz);
    found timestamptz[];
    lo timestamptz;
    hi timestamptz;
    mid timestamptz;
BEGIN
    SELECT array_agg(c ORDER BY c) INTO found
    FROM (SELECT DISTINCT (w - o) AT TIME ZONE 'UTC' AS c FROM unnest(ARRAY[before_offset, after_offset]) o) x
    WHERE (c AT TIME ZONE tz) = w;
    IF cardinality(found) = 2 THEN
        RETURN CASE WHEN wildcard THEN found ELSE found[1:1] END;
    ELSIF found IS NOT NULL THEN
        RETURN found;
    ELSIF wildcard OR after_offset <= before_offset THEN
        RETURN '{}';
    END IF;
    -- In a gap: the change is between w read in the later offset and w read in the earlier.
    lo := (w - after_offset) AT TIME ZONE 'UTC';
    hi := (w - before_offset) AT TIME ZONE 'UTC';
    WHILE hi - lo > interval '1 second' LOOP
        mid := lo + (hi - lo) / 2;
        IF ace.tz_offset(mid, tz) = after_offset THEN
            hi := mid;
        ELSE
            lo := mid;
        END IF;
    END LOOP;
    RETURN ARRAY[date_trunc('second', hi)];
END $$;

-- The first time after `after` at which cron fires, read in time zone tz (by default the
-- schedule_timezone setting, else UTC). Around daylight-saving changes it runs as Vixie cron
-- does: a fixed-time job (minute and hour fields without '*') whose time is skipped runs at the
-- change, and one whose time repeats runs once; a wildcard job skips the missing times and runs
-- in both passes of a repeated hour.
CREATE OR REPLACE FUNCTION ace.cron_next(cron text, after timestamptz DEFAULT now(), tz text DEFAULT NULL)
RETURNS timestamptz LANGUAGE plpgsql STABLE AS $$
DECLARE
    f record;
    zone text := coalesce(tz, ace.setting('schedule_timezone'), 'UTC');
    start timestamp;
    w timestamp;
    c timestamptz;
    best timestamptz;
    fall_back_near boolean;
BEGIN
    BEGIN
        PERFORM now() AT TIME ZONE zone;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'unknown time zone "%"', zone
            USING ERRCODE = 'invalid_parameter_value', HINT = 'SELECT name FROM pg_timezone_names lists them.';
    END;
    SELECT * INTO f FROM ace.cron_parse(cron);
    after := coalesce(after, now());
    start := after AT TIME ZONE zone;
    -- When clocks go back within three hours, the repeated hour's second pass lies after `after`
    -- but at earlier wall-clock times: the search starts before them and keeps the earliest.
    fall_back_near := ace.tz_offset(after + interval '3 hours', zone) < ace.tz_offset(after, zone);
    IF fall_back_near THEN
        start := start - interval '3 hours';
    END IF;
    w := start;
    LOOP
        w := ace.cron_next_wall(f.minutes, f.hours, f.days, f.months, f.weekdays, f.days_star, f.weekdays_star, w);
        IF w IS NULL THEN
            RETURN best;
        END IF;
        FOREACH c IN ARRAY ace.cron_instants(w, zone, f.wildcard) LOOP
            IF c > after AND (best IS NULL OR c < best) THEN
                best := c;
            END IF;
        END LOOP;
        IF best IS NOT NULL AND (NOT fall_back_near OR w > (best AT TIME ZONE zone) + interval '3 hours') THEN
            RETURN best;
        END IF;
    END LOOP;
END $$;

-- ---------------------------------------------------------------------------------------------
-- The owner's functions.

-- Task types that change data: a schedule may not start them (repair policies will).
CREATE OR REPLACE FUNCTION ace.unschedulable_task_types() RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT ARRAY['table-repair']
$$;

-- A due time as a scheduled run's args carry it: UTC, to the microsecond, whatever the session's
-- TimeZone, so that the unique index on (owner, schedule, due) sees one text per instant.
CREATE OR REPLACE FUNCTION ace.schedule_due_text(due timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(due AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- Refuses a definition that could never run, whoever asks: everything but the arguments, which
-- only the caller can check (ace.schedule does, as the caller).
CREATE OR REPLACE FUNCTION ace.check_schedule_definition(schedule_name text, task_type text, every interval, cron text,
                                                         scope text, overlap text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    floor interval := ace.setting('min_schedule_interval')::interval;
BEGIN
    IF schedule_name IS NULL OR btrim(schedule_name) = '' THEN
        RAISE EXCEPTION 'schedule_name is required' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF (every IS NULL) = (cron IS NULL) THEN
        RAISE EXCEPTION 'a schedule needs exactly one of every and cron, got %', CASE WHEN every IS NULL THEN 'neither' ELSE 'both' END
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'every => ''1 hour'' runs it every hour; cron => ''0 3 * * *'' at 03:00 every day.';
    END IF;
    IF scope IS NULL OR scope NOT IN ('node', 'cluster') THEN
        RAISE EXCEPTION 'scope must be node or cluster, got "%"', scope
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'node: this node''s agent runs it; cluster: only the leader''s agent does (make it on every node).';
    END IF;
    IF overlap IS NULL OR overlap NOT IN ('skip', 'allow') THEN
        RAISE EXCEPTION 'overlap must be skip or allow, got "%"', overlap
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'skip: a due time whose previous run is still queued or running is skipped and counted.';
    END IF;
    IF task_type = ANY (ace.unschedulable_task_types()) THEN
        RAISE EXCEPTION '% cannot be scheduled: a repair changes data: repair policies (ace.repair_policy) run repairs, guarded', task_type
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Schedule the diff, and repair what it finds with ace.table_repair(diff_task).';
    END IF;
    IF every IS NOT NULL THEN
        IF every <= interval '0' THEN
            RAISE EXCEPTION 'every must be a positive interval, got %', every USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF floor IS NOT NULL AND every < floor THEN
            RAISE EXCEPTION 'every % is shorter than min_schedule_interval (%)', every, ace.setting('min_schedule_interval')
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Ask for a longer every. ' || ace.setting_hint('min_schedule_interval', '10 seconds');
        END IF;
    ELSE
        PERFORM ace.cron_parse(cron);
    END IF;
END $$;

-- The first due time after now of a schedule whose due time `due` has come: one catch-up run
-- after downtime, never a burst. `every` counts elapsed time (a day is 24 hours); cron reads the
-- wall clock of schedule_timezone.
CREATE OR REPLACE FUNCTION ace.schedule_next_due(every interval, cron text, due timestamptz) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    next_at timestamptz;
    steps float8;
BEGIN
    IF cron IS NOT NULL THEN
        RETURN ace.cron_next(cron, greatest(due, now()));
    END IF;
    next_at := ((due AT TIME ZONE 'UTC') + every) AT TIME ZONE 'UTC';
    IF next_at <= now() THEN
        steps := floor(extract(epoch FROM now() - due) / extract(epoch FROM every));
        next_at := ((due AT TIME ZONE 'UTC') + every * steps) AT TIME ZONE 'UTC';
        WHILE next_at <= now() LOOP
            next_at := ((next_at AT TIME ZONE 'UTC') + every) AT TIME ZONE 'UTC';
        END LOOP;
    END IF;
    RETURN next_at;
END $$;

-- Refuses a login that may not act for owner: only the owner (and its members) may change what
-- the owner owns here (its schedules, its repair policies), or fire it. The SECURITY DEFINER
-- functions that write those tables call it first.
CREATE OR REPLACE FUNCTION ace.check_acts_for(owner name, what text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT pg_has_role(session_user, owner, 'MEMBER') THEN
        RAISE EXCEPTION 'role % may not act for role %''s %', session_user, owner, what
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- Makes a schedule, or redefines the caller's schedule of that name (its counters are kept), and
-- returns when it is due first: at once with run_now, else after one every or at the cron's next
-- time. The arguments are validated as the caller with the task type's own validator, as the
-- insert of each run will.
CREATE OR REPLACE FUNCTION ace.schedule(schedule_name text, task_type text, args jsonb, every interval DEFAULT NULL,
                                        cron text DEFAULT NULL, run_now boolean DEFAULT true, scope text DEFAULT 'node',
                                        overlap text DEFAULT 'skip', enabled boolean DEFAULT true)
RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ace.check_submitter();
    PERFORM ace.check_not_policy_schedule(schedule_name, task_type);
    PERFORM ace.check_schedule_definition(schedule_name, task_type, every, cron, scope, overlap);
    args := coalesce(args, '{}');
    IF jsonb_typeof(args) <> 'object' THEN
        RAISE EXCEPTION 'task args must be a JSON object' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM ace.checked_task_args(task_type, args);
    RETURN ace.save_schedule_row(current_user, schedule_name, task_type, args, every, cron, coalesce(run_now, true),
                                 scope, overlap, coalesce(enabled, true));
END $$;

CREATE OR REPLACE FUNCTION ace.save_schedule_row(owner name, schedule_name text, task_type text, args jsonb, every interval,
                                                 cron text, run_now boolean, scope text, overlap text, enabled boolean)
RETURNS timestamptz LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    first_due timestamptz;
BEGIN
    PERFORM ace.check_acts_for(owner, 'schedules');
    PERFORM ace.check_schedule_definition(schedule_name, task_type, every, cron, scope, overlap);
    first_due := CASE WHEN run_now THEN now()
                      WHEN every IS NOT NULL THEN ((now() AT TIME ZONE 'UTC') + every) AT TIME ZONE 'UTC'
                      ELSE ace.cron_next(cron, now()) END;
    INSERT INTO ace.schedules AS s (owner, schedule_name, task_type, args, every, cron, scope, overlap, enabled, next_due)
    VALUES (owner, schedule_name, task_type, args, every, cron, scope, overlap, enabled, first_due)
    ON CONFLICT ON CONSTRAINT schedules_pkey DO UPDATE SET
        task_type = EXCLUDED.task_type, args = EXCLUDED.args, every = EXCLUDED.every, cron = EXCLUDED.cron,
        scope = EXCLUDED.scope, overlap = EXCLUDED.overlap, enabled = EXCLUDED.enabled, next_due = EXCLUDED.next_due;
    RETURN first_due;
END $$;

-- The caller's schedule of that name, locked; an error naming it when there is none.
CREATE OR REPLACE FUNCTION ace.own_schedule_row(owner name, schedule_name text) RETURNS ace.schedules
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    s ace.schedules;
BEGIN
    PERFORM ace.check_acts_for(owner, 'schedules');
    SELECT * INTO s FROM ace.schedules x WHERE x.owner = own_schedule_row.owner AND x.schedule_name = own_schedule_row.schedule_name
        FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role % has no schedule "%"', owner, schedule_name
            USING ERRCODE = 'no_data_found', HINT = 'SELECT schedule_name FROM ace.schedules lists yours.';
    END IF;
    RETURN s;
END $$;

-- Removes, pauses or resumes one of the owner's schedules, and returns it as it is now (as it was,
-- for a removal). A resumed schedule is next due at its first due time after now: pausing skips.
CREATE OR REPLACE FUNCTION ace.change_schedule_row(owner name, schedule_name text, change text) RETURNS ace.schedules
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    s ace.schedules := ace.own_schedule_row(owner, schedule_name);
BEGIN
    CASE change
    WHEN 'remove' THEN
        DELETE FROM ace.schedules x WHERE x.owner = s.owner AND x.schedule_name = s.schedule_name;
        RETURN s;
    WHEN 'pause' THEN
        UPDATE ace.schedules x SET enabled = false WHERE x.owner = s.owner AND x.schedule_name = s.schedule_name
        RETURNING * INTO s;
    WHEN 'resume' THEN
        UPDATE ace.schedules x SET enabled = true,
            next_due = CASE WHEN x.next_due > now() THEN x.next_due ELSE ace.schedule_next_due(x.every, x.cron, x.next_due) END
        WHERE x.owner = s.owner AND x.schedule_name = s.schedule_name
        RETURNING * INTO s;
    END CASE;
    RETURN s;
END $$;

CREATE OR REPLACE FUNCTION ace.unschedule(schedule_name text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ace.check_not_policy_schedule(schedule_name);
    PERFORM ace.change_schedule_row(current_user, schedule_name, 'remove');
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION ace.pause_schedule(schedule_name text) RETURNS ace.schedules LANGUAGE sql AS $$
    SELECT * FROM ace.change_schedule_row(current_user, $1, 'pause')
$$;

CREATE OR REPLACE FUNCTION ace.resume_schedule(schedule_name text) RETURNS ace.schedules LANGUAGE sql AS $$
    SELECT * FROM ace.change_schedule_row(current_user, $1, 'resume')
$$;

-- The runs of the caller's schedule, newest first, as far as the caller may see them.
CREATE OR REPLACE FUNCTION ace.schedule_runs(schedule_name text) RETURNS SETOF ace.tasks
LANGUAGE sql STABLE AS $$
    SELECT t.* FROM ace.tasks t
    WHERE t.args ? 'schedule' AND t.args->>'schedule' = $1
      AND EXISTS (SELECT 1 FROM ace.schedules s WHERE s.owner = t.submitted_by AND s.schedule_name = $1)
    ORDER BY t.submitted_at DESC
$$;

-- Starts a run of the caller's schedule now, outside its timetable, and returns the task; its
-- next due time stays. With overlap skip, a run still QUEUED or RUNNING is an error.
CREATE OR REPLACE FUNCTION ace.run_schedule(schedule_name text) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM ace.check_submitter();
    SELECT * INTO r FROM ace.fire_schedule(schedule_name, NULL);
    CASE r.outcome
    WHEN 'fired' THEN
        RETURN r.task_id;
    WHEN 'skipped' THEN
        RAISE EXCEPTION 'schedule "%" has a run still queued or running (task %), and its overlap is skip', schedule_name, r.task_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Wait for it with ace.wait(task_id), or cancel it with ace.cancel(task_id).';
    ELSE
        RAISE EXCEPTION 'schedule "%" could not start a run: %', schedule_name, r.error
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Fix what the error names; the schedule is unchanged.';
    END CASE;
END $$;

-- ---------------------------------------------------------------------------------------------
-- Firing. The agent calls ace.fire_schedule(name, due, node) in a session logged in as the
-- owner, in one transaction: the claim moves the schedule's next_due from due on (a
-- compare-and-set under the row's lock), and the run is inserted as the owner. Both commit
-- together or not at all, so a due time fires once, whichever agent gets there first and
-- whatever crash comes between the insert and the commit; the unique index tasks_schedule_due
-- backs it up. outcome: fired (task_id), skipped (overlap skip and a run still queued or running:
-- task_id is that run), failed (the run's insert was refused: error), not_leader (a cluster
-- schedule on another node than the leader: moved on without a run), gone (another agent fired
-- that due time, or the schedule changed meanwhile).

-- The claim, for the owner: see above. due NULL is a run now (ace.run_schedule), which leaves
-- next_due alone.
CREATE OR REPLACE FUNCTION ace.claim_schedule_row(owner name, schedule_name text, due timestamptz, node_name text,
    OUT verdict text, OUT run_due timestamptz, OUT task_type text, OUT args jsonb, OUT running uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    s ace.schedules;
    next_at timestamptz;
BEGIN
    PERFORM ace.check_acts_for(owner, 'schedules');
    IF due IS NULL THEN
        s := ace.own_schedule_row(owner, schedule_name);
        run_due := clock_timestamp();
        next_at := s.next_due;
    ELSE
        SELECT * INTO s FROM ace.schedules x
        WHERE x.owner = claim_schedule_row.owner AND x.schedule_name = claim_schedule_row.schedule_name FOR UPDATE;
        IF NOT FOUND OR NOT s.enabled OR s.next_due IS DISTINCT FROM due OR due > now() THEN
            verdict := 'gone';
            RETURN;
        END IF;
        run_due := due;
        next_at := ace.schedule_next_due(s.every, s.cron, due);
        IF s.scope = 'cluster' AND NOT ace.is_leader() THEN
            UPDATE ace.schedules x SET next_due = next_at WHERE x.owner = s.owner AND x.schedule_name = s.schedule_name;
            verdict := 'not_leader';
            RETURN;
        END IF;
    END IF;
    IF s.overlap = 'skip' THEN
        SELECT t.task_id INTO running FROM ace.tasks t
        WHERE t.submitted_by = s.owner AND t.args ? 'schedule' AND t.args->>'schedule' = s.schedule_name
          AND t.status IN ('QUEUED', 'RUNNING')
        LIMIT 1;
        IF running IS NOT NULL THEN
            UPDATE ace.schedules x SET next_due = next_at, skipped = x.skipped + 1
            WHERE x.owner = s.owner AND x.schedule_name = s.schedule_name;
            PERFORM ace.record_event('schedule_skipped', node_name, s.args->>'table_name', running,
                jsonb_build_object('schedule', s.schedule_name, 'owner', s.owner, 'due', run_due, 'skipped', s.skipped + 1,
                                   'next_due', next_at));
            verdict := 'skipped';
            RETURN;
        END IF;
    END IF;
    UPDATE ace.schedules x SET next_due = next_at, last_fired = run_due
    WHERE x.owner = s.owner AND x.schedule_name = s.schedule_name;
    verdict := 'run';
    task_type := s.task_type;
    args := s.args;
END $$;

-- Refuses a task whose args name a schedule, unless it is the run its schedule is firing now:
-- the caller's schedule of that name, whose last due time is the one the args carry.
CREATE OR REPLACE FUNCTION ace.check_schedule_run(args jsonb) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT (args ? 'schedule' OR args ? 'schedule_due') THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ace.schedules s
                   WHERE s.owner = current_user AND s.schedule_name = check_schedule_run.args->>'schedule'
                     AND ace.schedule_due_text(s.last_fired) = check_schedule_run.args->>'schedule_due') THEN
        RAISE EXCEPTION 'the arguments schedule and schedule_due are set by a schedule''s run only'
            USING ERRCODE = 'insufficient_privilege', HINT = 'Start a run of your schedule with ace.run_schedule(name).';
    END IF;
END $$;

-- Records a started run: its task, the count, a schedule_fired event (seen by who sees the task).
CREATE OR REPLACE FUNCTION ace.schedule_run_started(owner name, schedule_name text, due timestamptz, task_id uuid, node_name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    s ace.schedules := ace.own_schedule_row(owner, schedule_name);
BEGIN
    IF NOT EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = schedule_run_started.task_id AND t.submitted_by = owner
                   AND t.args->>'schedule' = schedule_name AND t.args->>'schedule_due' = ace.schedule_due_text(due)) THEN
        RAISE EXCEPTION 'task % is not the run of schedule "%" due at %', task_id, schedule_name, due
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE ace.schedules x SET last_task = task_id, runs = x.runs + 1
    WHERE x.owner = s.owner AND x.schedule_name = s.schedule_name;
    PERFORM ace.record_event('schedule_fired', node_name, s.args->>'table_name', task_id,
        jsonb_build_object('schedule', s.schedule_name, 'owner', s.owner, 'due', due, 'task_type', s.task_type,
                           'next_due', s.next_due));
END $$;

-- Records a run whose insert was refused (a table dropped since, a role's rights taken away):
-- the count, the error, and a schedule_failed event. The schedule goes on.
CREATE OR REPLACE FUNCTION ace.schedule_run_failed(owner name, schedule_name text, due timestamptz, error text, sqlstate text,
                                                   node_name text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    s ace.schedules := ace.own_schedule_row(owner, schedule_name);
BEGIN
    IF s.last_fired IS DISTINCT FROM due THEN
        RAISE EXCEPTION 'schedule "%" is not firing its run due at %', schedule_name, due USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE ace.schedules x SET failures = x.failures + 1, last_error = error, last_error_at = clock_timestamp()
    WHERE x.owner = s.owner AND x.schedule_name = s.schedule_name;
    PERFORM ace.record_event('schedule_failed', node_name, s.args->>'table_name', NULL,
        jsonb_build_object('schedule', s.schedule_name, 'owner', s.owner, 'due', due, 'error', error, 'sqlstate', sqlstate,
                           'next_due', s.next_due));
END $$;

-- Fires the caller's schedule for its due time `due` (NULL: a run now), as described above.
CREATE OR REPLACE FUNCTION ace.fire_schedule(schedule_name text, due timestamptz, node_name text DEFAULT NULL,
    OUT outcome text, OUT task_id uuid, OUT error text)
LANGUAGE plpgsql AS $$
DECLARE
    c record;
    id uuid;
    msg text;
    state text;
BEGIN
    SELECT * INTO c FROM ace.claim_schedule_row(current_user, schedule_name, due, node_name);
    IF c.verdict <> 'run' THEN
        outcome := c.verdict;
        task_id := c.running;
        RETURN;
    END IF;
    BEGIN
        INSERT INTO ace.tasks (task_type, args)
        VALUES (c.task_type, c.args || jsonb_build_object('schedule', schedule_name, 'schedule_due', ace.schedule_due_text(c.run_due)))
        RETURNING ace.tasks.task_id INTO id;
    EXCEPTION
        WHEN unique_violation THEN
            -- This due time's run exists already: nothing more to do.
            outcome := 'gone';
            RETURN;
        WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
            PERFORM ace.schedule_run_failed(current_user, schedule_name, c.run_due, msg, state, node_name);
            outcome := 'failed';
            error := msg;
            RETURN;
    END;
    PERFORM ace.schedule_run_started(current_user, schedule_name, c.run_due, id, node_name);
    outcome := 'fired';
    task_id := id;
END $$;

-- The schedules due now, oldest due first: what the agent (the schema's owner) fires next.
CREATE OR REPLACE FUNCTION ace.due_schedules(max_count int DEFAULT 100)
RETURNS TABLE (owner name, schedule_name text, next_due timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT s.owner, s.schedule_name, s.next_due FROM ace.schedules s
    WHERE s.enabled AND s.next_due <= now()
    ORDER BY s.next_due
    LIMIT max_count
$$;
