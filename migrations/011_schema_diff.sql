-- Schema diffs (issue 18): parents that wait for child tasks, and schema findings.

-- A parent task (a schema or replication-set diff) that only waits for its children holds no
-- slot of its submitter's max_running_tasks_per_role: the claim does not count it while this
-- is set. Set by the parent's agent (fenced by its claim); the insert trigger clears it.
ALTER TABLE ace.tasks ADD COLUMN waiting_on_children boolean NOT NULL DEFAULT false;

-- Children name their parent in args->>'parent_task': found by ace.cancel and the parent.
CREATE INDEX tasks_parent_task ON ace.tasks ((args->>'parent_task')) WHERE args ? 'parent_task';

-- One row per finding of a schema-diff's structure or objects comparison: what differs, and
-- its definition on each node (null where it is missing).
CREATE TABLE ace.schema_findings (
    task_id     uuid NOT NULL REFERENCES ace.tasks ON DELETE CASCADE,
    row_no      bigint NOT NULL,
    object_type text NOT NULL,
    object_name text NOT NULL,
    detail      text NOT NULL,
    kind        text NOT NULL CONSTRAINT schema_finding_kind CHECK (kind IN ('missing', 'different')),
    definitions jsonb NOT NULL,   -- node name -> definition, or null where absent
    PRIMARY KEY (task_id, row_no)
);
ALTER TABLE ace.schema_findings ENABLE ROW LEVEL SECURITY;
CREATE POLICY schema_findings_visible ON ace.schema_findings FOR SELECT
    USING (EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = schema_findings.task_id));
GRANT SELECT ON ace.schema_findings TO PUBLIC;
