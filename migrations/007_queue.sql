-- Issue 16: the queue's limits count the login, and finished tasks are kept for a while.
--
-- submitted_session_user is the login (session_user) that inserted the task, set by the insert
-- trigger: a role's quotas count it, so SET ROLE to a group gives no second quota.
ALTER TABLE ace.tasks ADD COLUMN submitted_session_user name;
UPDATE ace.tasks SET submitted_session_user = submitted_by;
ALTER TABLE ace.tasks ALTER COLUMN submitted_session_user SET DEFAULT session_user,
                      ALTER COLUMN submitted_session_user SET NOT NULL;
DROP INDEX IF EXISTS ace.tasks_queued_by_role;
DROP INDEX IF EXISTS ace.tasks_running_by_role;
CREATE INDEX tasks_queued_by_login ON ace.tasks (submitted_session_user) WHERE status = 'QUEUED';
CREATE INDEX tasks_running_by_login ON ace.tasks (submitted_session_user) WHERE status = 'RUNNING';
-- ace.check_queued_limit (SECURITY DEFINER) is now the only writer of ace.role_submissions,
-- keyed by login: no user may lock a row of it, and so hold up another login's submissions.
REVOKE ALL ON ace.role_submissions FROM PUBLIC;
-- The agent deletes finished tasks older than task_retention, oldest first.
CREATE INDEX tasks_finished ON ace.tasks (finished_at) WHERE status IN ('COMPLETED', 'FAILED', 'CANCELLED');

-- New settings. The CHECK of ace.settings is the previous release's here, which knows them not:
-- it is dropped, and code/90_wiring.sql adds it again with the new ace.check_setting.
ALTER TABLE ace.settings DROP CONSTRAINT IF EXISTS setting_value_valid;
INSERT INTO ace.settings (name, value, description) VALUES
    ('max_cdc_timeout', '10 minutes', 'the longest cdc_timeout an mtree-diff may ask for'),
    ('task_retention', '30 days', 'how long finished tasks (COMPLETED, FAILED, CANCELLED) and their results are kept; the agent deletes older ones')
ON CONFLICT (name) DO NOTHING;
