-- The event log: ace.record_event is its one writer, ace.events_since its reader.

-- Records an event as the session's login and wakes listeners on ace_event, without a payload:
-- a listener reads what it may see with ace.events_since. It inserts with the caller's
-- privileges, so only the schema's owner (and the agent, which owns the schema) records events.
CREATE OR REPLACE FUNCTION ace.record_event(kind text, node_name text DEFAULT NULL, table_name text DEFAULT NULL,
                                            task_id uuid DEFAULT NULL, detail jsonb DEFAULT '{}')
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    id bigint;
BEGIN
    INSERT INTO ace.events (kind, node_name, table_name, task_id, detail)
    VALUES (kind, node_name, table_name, task_id, coalesce(detail, '{}'))
    RETURNING event_id INTO id;
    PERFORM pg_notify('ace_event', '');
    RETURN id;
END $$;

-- The events after after_id, oldest first, of the given kinds (all when NULL), as far as the
-- caller may see them: an event about a task only when the caller may see the task.
CREATE OR REPLACE FUNCTION ace.events_since(after_id bigint DEFAULT 0, kinds text[] DEFAULT NULL)
RETURNS SETOF ace.events LANGUAGE sql STABLE AS $$
    SELECT * FROM ace.events e
    WHERE e.event_id > coalesce(after_id, 0) AND (kinds IS NULL OR e.kind = ANY (kinds))
    ORDER BY e.event_id
$$;
