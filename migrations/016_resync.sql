-- Issue 20 (M19): a repair's commit on a node, recorded once per node instead of marking each of
-- its action rows: resyncing an emptied node commits a million inserts, and rewriting a million
-- ace.repair_actions rows to set applied = true cost more than the inserts. An action was applied
-- when it is no skip and its (task, attempt, node) has a row here (or, for repairs recorded
-- before this migration, when its own applied column says so). Written by sqlapi
-- (RepairActions.MarkApplied); read through ace.repair_rows and sqlapi.ReadRepairActions.
CREATE TABLE ace.repair_commits (
    task_id      uuid NOT NULL REFERENCES ace.tasks ON DELETE CASCADE,
    attempt      int NOT NULL,
    node         text NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (task_id, attempt, node)
);
ALTER TABLE ace.repair_commits ENABLE ROW LEVEL SECURITY;
CREATE POLICY repair_commits_visible ON ace.repair_commits FOR SELECT
    USING (EXISTS (SELECT 1 FROM ace.tasks t WHERE t.task_id = repair_commits.task_id));
GRANT SELECT ON ace.repair_commits TO PUBLIC;
