-- Signatures that earlier releases had and later replaced. CREATE OR REPLACE cannot remove an
-- overload, so each one is dropped here by name; a function whose signature changes adds its old
-- signature to this list.

-- drop_lacking drops the ace routines named in names whose argument names (OUT columns
-- included) lack arg: the earlier signatures of routines that gained an argument or a column,
-- found by what they lack. It lives for this installation only.
CREATE OR REPLACE FUNCTION pg_temp.drop_lacking(names text[], arg text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    p regprocedure;
BEGIN
    FOR p IN SELECT oid::regprocedure FROM pg_proc
             WHERE pronamespace = 'ace'::regnamespace AND proname = ANY(names) AND NOT arg = ANY(proargnames) LOOP
        EXECUTE format('DROP ROUTINE %s', p);
    END LOOP;
END $$;

-- Migration 001's table_diff and run_table_diff, before the options of migration 003.
DROP PROCEDURE IF EXISTS ace.run_table_diff(text, text[], int, text, bigint, int, uuid, text, bigint, jsonb);
DROP FUNCTION IF EXISTS ace.table_diff(text, text[], int, text, bigint, int);

-- Issue 9, one name and one default per option: ace.wait became the one wait loop (it took
-- progress_notices), so ace.follow_task and the two-argument ace.wait went; ace.repair_report
-- became ace.repair_rows, so as not to share a name with ACE's repair report.
DROP PROCEDURE IF EXISTS ace.follow_task(uuid, text, jsonb);
DROP FUNCTION IF EXISTS ace.wait(uuid, interval);
DROP FUNCTION IF EXISTS ace.repair_report(uuid);

-- Issue 16: the queued limit counts the inserting login, which it finds itself.
DROP FUNCTION IF EXISTS ace.check_queued_limit(name);

-- table_repair's nodes became target_nodes. The argument types did not change, so the old
-- definitions are found by their argument names; CREATE OR REPLACE cannot rename an argument.
DO $$
DECLARE
    p regprocedure;
BEGIN
    FOR p IN SELECT oid::regprocedure FROM pg_proc
             WHERE pronamespace = 'ace'::regnamespace AND proname IN ('table_repair', 'run_table_repair')
               AND 'nodes' = ANY(proargnames) LOOP
        EXECUTE format('DROP ROUTINE %s', p);
    END LOOP;
END $$;

-- Issue 21: the CALL forms (ace.run_*) and the procedure they share gained an outcome column, a
-- short line beside the result's jsonb; their old signatures lack it.
DO $$
DECLARE
    p regprocedure;
BEGIN
    FOR p IN SELECT oid::regprocedure FROM pg_proc
             WHERE pronamespace = 'ace'::regnamespace AND prokind = 'p'
               AND (proname LIKE 'run\_%' OR proname = 'follow_submitted') AND NOT 'outcome' = ANY(proargnames) LOOP
        EXECUTE format('DROP PROCEDURE %s', p);
    END LOOP;
END $$;

-- Issue 16: ace.ready_mtree returned a tree's whole row (its builder and build task) to anyone;
-- ace.check_mtree_ready only raises.
DROP FUNCTION IF EXISTS ace.ready_mtree(text);

-- Issue 19: ace.add_node took the state of a new node.
DROP FUNCTION IF EXISTS ace.add_node(text, text, text);

-- Issue 20: table_repair and run_table_repair took repair_plan and plan, and repair_rows returns
-- the plan's rule.
SELECT pg_temp.drop_lacking('{table_repair,run_table_repair}', 'repair_plan');
SELECT pg_temp.drop_lacking('{repair_rows}', 'rule');

-- Issue 18: table_diff and run_table_diff took columns (the compared columns).
DROP PROCEDURE IF EXISTS ace.run_table_diff(text, text[], int, text, bigint, int, float8, int, text, timestamptz, text, interval, boolean,
                                            uuid, text, bigint, jsonb);
DROP FUNCTION IF EXISTS ace.table_diff(text, text[], int, text, bigint, int, float8, int, text, timestamptz, text, interval, boolean);

-- Issue 20 (recovery): table_repair and run_table_repair took recovery_mode and preserve_origin.
SELECT pg_temp.drop_lacking('{table_repair,run_table_repair}', 'preserve_origin');

-- Issue 20: the schedules' owner check became ace.check_acts_for(owner, what), which the repair
-- policies share.
DROP FUNCTION IF EXISTS ace.check_schedule_owner(name);

-- Issue 21: a tree's status shows how its leaves are summarised; the earlier mtree_local_status
-- and mtree_status lack the leaf_summary column.
SELECT pg_temp.drop_lacking('{mtree_local_status,mtree_status}', 'leaf_summary');

DROP FUNCTION pg_temp.drop_lacking(text[], text);
