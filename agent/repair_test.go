package agent_test

import (
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// wideDDL has a column of every type repairs must round-trip exactly.
const wideDDL = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE public.w (
    id  bigint PRIMARY KEY,
    t   text, n numeric(12,2), nf numeric, ts timestamptz, tsn timestamp, j jsonb, js json, b bytea, u uuid,
    ia  int[], ta text[], e mood, iv interval, ip inet, tm time, m money, p point, r int4range, bt bit(8),
    f   float8, bo boolean
)`

const wideRows = `
INSERT INTO w SELECT g, 'text ' || g, g * 1.25, g / 7.0, '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute 1.5 second',
       '2024-01-01 10:00:00'::timestamp + g * interval '1 hour', jsonb_build_object('k', g, 's', 'a"b'),
       ('{"k":  ' || g || ', "dup": 1, "dup": 2}')::json, decode(md5(g::text), 'hex'), md5(g::text)::uuid,
       ARRAY[g, NULL, g + 1], ARRAY['a,b', 'c"d', NULL], (ARRAY['sad','ok','happy']::mood[])[g % 3 + 1],
       make_interval(days => g, secs => g * 1.5), ('10.0.' || (g % 250) || '.1/24')::inet, '12:00:00'::time + g * interval '1.25 second',
       (g * 1.5)::numeric::money, point(g, -g), int4range(g, g + 10), (g % 256)::bit(8), g / 3.0::float8, g % 2 = 0
FROM generate_series(1, 600) g`

// plantWideDrift changes rows on n2 and n3 in every column type, deletes and inserts, and returns
// the keys that differ.
func plantWideDrift(e *diffEnv) []int64 {
	n2, n3 := e.Node("n2"), e.Node("n3")
	t := e.t
	n2.Exec(t, `UPDATE w SET t = 'changed', n = 0.01, nf = 1e-20, ts = ts + interval '1 microsecond', tsn = '1999-12-31 23:59:59.999999' WHERE id = 10`)
	n2.Exec(t, `UPDATE w SET j = '{"x": [1, 2, {"y": null}]}', js = '[1,  2]', b = '\x00ff00', u = gen_random_uuid() WHERE id = 20`)
	n2.Exec(t, `UPDATE w SET ia = '{}', ta = ARRAY['x y', ''], e = 'happy', iv = '-1 day 3 hours', ip = '::1/128' WHERE id = 30`)
	n3.Exec(t, `UPDATE w SET tm = '23:59:59.999999', m = -12.34, p = point(0.5, 1e10), r = 'empty', bt = B'11111111' WHERE id = 40`)
	n3.Exec(t, `UPDATE w SET f = 'NaN', bo = NULL, t = NULL WHERE id = 50`)
	n3.Exec(t, `UPDATE w SET f = 1e308, ts = 'infinity', tsn = '-infinity', t = E'tab\there \\ "q" \n' WHERE id = 60`)
	n2.Exec(t, `DELETE FROM w WHERE id IN (70, 71)`)
	n3.Exec(t, `DELETE FROM w WHERE id = 71`)
	n2.Exec(t, `INSERT INTO w (id, t, j) VALUES (-7, 'only on n2', '{"a": 1}')`)
	n3.Exec(t, `INSERT INTO w (id, t, iv) VALUES (9000, 'only on n3', '1 year')`)
	return []int64{-7, 10, 20, 30, 40, 50, 60, 70, 71, 9000}
}

// differingIDs runs a fresh diff of w and returns the differing ids.
func (e *diffEnv) differingIDs() []int64 {
	e.t.Helper()
	_, rows := e.completedDiff(`'public.w'`)
	var ids []int64
	for _, r := range rows {
		for _, row := range r.Rows {
			if row != nil {
				ids = append(ids, int64(row["id"].(float64)))
				break
			}
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func wideEnv(t *testing.T) *diffEnv {
	e := setup(t, wideDDL)
	e.ExecAll(wideRows)
	return e
}

func TestRepairFromSourceOfTruthEveryType(t *testing.T) {
	t.Parallel()
	e := wideEnv(t)
	plantWideDrift(e)
	diff := e.diffID("public.w")

	id, s := e.completedRepair(diff, `'n1'`)
	require.True(t, s.FullyRepaired, "%+v", s)
	require.Equal(t, []string{"n2", "n3"}, s.RepairedNodes)
	require.Empty(t, s.FailedNodes)
	require.Equal(t, "source_of_truth", s.Mode)
	e.requireInSync("public.w")

	rep := e.report(id)
	require.Equal(t, repair.ActionDelete, rep[`n2 {"id": -7}`].Action)
	require.Equal(t, repair.ActionDelete, rep[`n3 {"id": 9000}`].Action)
	require.Equal(t, repair.ActionInsert, rep[`n2 {"id": 70}`].Action)
	require.Equal(t, repair.ActionInsert, rep[`n3 {"id": 71}`].Action)
	require.Equal(t, repair.ActionUpdate, rep[`n2 {"id": 10}`].Action)
	require.Equal(t, "changed", rep[`n2 {"id": 10}`].Before["t"])
	require.Equal(t, "text 10", rep[`n2 {"id": 10}`].After["t"])
	require.True(t, rep[`n2 {"id": 10}`].Applied)
	require.NotContains(t, rep, `n3 {"id": 10}`, "n3 already had n1's row")
	require.EqualValues(t, 2, s.Nodes["n2"].Inserted)
	require.EqualValues(t, 1, s.Nodes["n2"].Deleted)
	require.EqualValues(t, 3, s.Nodes["n2"].Updated)
	require.EqualValues(t, 1, s.Nodes["n3"].Inserted)

	// Nothing is left to recheck.
	_, rerun := e.completedRerun(diff)
	require.True(t, rerun.InSync())
}

func TestRepairUpsertOnlyKeepsExtraRows(t *testing.T) {
	t.Parallel()
	e := wideEnv(t)
	plantWideDrift(e)
	_, s := e.completedRepair(e.diffID("public.w"), `'n1', upsert_only => true`)
	require.True(t, s.FullyRepaired, "rows kept by the mode are not failures: %+v", s)
	require.EqualValues(t, 0, s.Deleted)
	require.EqualValues(t, 2, s.SkippedByReason[repair.ReasonUpsertOnly])
	require.Equal(t, []int64{-7, 9000}, e.differingIDs(), "only the rows n1 lacks remain")
}

func TestRepairInsertOnlyOnlyInserts(t *testing.T) {
	t.Parallel()
	e := wideEnv(t)
	plantWideDrift(e)
	_, s := e.completedRepair(e.diffID("public.w"), `'n1', insert_only => true`)
	require.EqualValues(t, 3, s.Inserted)
	require.EqualValues(t, 0, s.Updated+s.Deleted)
	require.Equal(t, []int64{-7, 10, 20, 30, 40, 50, 60, 9000}, e.differingIDs())
	require.Equal(t, "changed", e.scalar("n2", `SELECT t FROM w WHERE id = 10`))
}

func TestRepairBidirectionalInsertsEverywhere(t *testing.T) {
	t.Parallel()
	e := wideEnv(t)
	plantWideDrift(e)
	id, s := e.completedRepair(e.diffID("public.w"), `bidirectional => true`)
	require.Equal(t, []string{"n1", "n2", "n3"}, s.RepairedNodes)
	// -7 from n2 to n1 and n3, 9000 from n3 to n1 and n2, 70 to n2, 71 to n2 and n3.
	require.EqualValues(t, 7, s.Inserted)
	require.EqualValues(t, 0, s.Updated+s.Deleted)
	require.Equal(t, []int64{10, 20, 30, 40, 50, 60}, e.differingIDs(), "modified rows stay as they are")
	require.Equal(t, "only on n2", e.scalar("n1", `SELECT t FROM w WHERE id = -7`))
	require.Equal(t, "n2", e.source(id, "n1", -7))
}

func TestRepairFixNullsOnlyFillsNulls(t *testing.T) {
	t.Parallel()
	e := wideEnv(t)
	n1, n2, n3 := e.Node("n1"), e.Node("n2"), e.Node("n3")
	n2.Exec(t, `UPDATE w SET t = NULL, j = NULL, ia = NULL WHERE id = 5`)
	n3.Exec(t, `UPDATE w SET m = NULL, p = NULL WHERE id = 5`)
	n1.Exec(t, `UPDATE w SET bt = NULL, t = 'n1 differs' WHERE id = 6`) // t differs, not NULL: left alone
	n2.Exec(t, `UPDATE w SET iv = NULL WHERE id = 7`)
	n3.Exec(t, `UPDATE w SET iv = '5 days' WHERE id = 7`) // n1 and n3 disagree on what n2 lacks
	diff := e.diffID("public.w")

	_, s := e.completedRepair(diff, `fix_nulls => true`)
	require.Equal(t, "fix_nulls", s.Mode)
	require.EqualValues(t, 1, s.SkippedByReason[repair.ReasonConflictingValues])
	require.EqualValues(t, 1, s.Unresolved)
	require.False(t, s.FullyRepaired)
	require.Equal(t, "text 5", e.scalar("n2", `SELECT t FROM w WHERE id = 5`))
	require.Equal(t, "$7.50", e.scalar("n3", `SELECT m::text FROM w WHERE id = 5`))
	require.Equal(t, "00000110", e.scalar("n1", `SELECT bt::text FROM w WHERE id = 6`))
	require.Equal(t, "n1 differs", e.scalar("n1", `SELECT t FROM w WHERE id = 6`))
	require.Equal(t, "text 6", e.scalar("n2", `SELECT t FROM w WHERE id = 6`))
	require.Nil(t, e.scalar("n2", `SELECT iv FROM w WHERE id = 7`))
	require.Equal(t, []int64{6, 7}, e.differingIDs())
}

func TestRepairFixNullsNeverOverwritesAValueWrittenAfterTheDiff(t *testing.T) {
	t.Parallel()
	e := wideEnv(t)
	e.Node("n2").Exec(t, `UPDATE w SET t = NULL WHERE id = 5`)
	diff := e.diffID("public.w")
	e.Node("n2").Exec(t, `UPDATE w SET t = 'written later' WHERE id = 5`)
	_, s := e.completedRepair(diff, `fix_nulls => true, check_unchanged => false`)
	require.EqualValues(t, 1, s.SkippedByReason[repair.ReasonAlreadyInSync]+s.Updated)
	require.Equal(t, "written later", e.scalar("n2", `SELECT t FROM w WHERE id = 5`))
}

func TestRepairSkipsRowsChangedSinceTheDiff(t *testing.T) {
	t.Parallel()
	e := wideEnv(t)
	plantWideDrift(e)
	diff := e.diffID("public.w")
	n2 := e.Node("n2")
	n2.Exec(t, `UPDATE w SET t = 'written after the diff' WHERE id = 20`)
	n2.Exec(t, `INSERT INTO w (id, t) VALUES (70, 'inserted after the diff')`)
	n2.Exec(t, `DELETE FROM w WHERE id = -7`)

	id, s := e.completedRepair(diff, `'n1'`)
	require.False(t, s.FullyRepaired)
	require.EqualValues(t, 2, s.SkippedByReason[repair.ReasonChangedSinceDiff])
	require.EqualValues(t, 1, s.SkippedByReason[repair.ReasonAlreadyInSync], "-7 is gone already")
	require.EqualValues(t, 2, s.Unresolved)
	require.Equal(t, "written after the diff", e.scalar("n2", `SELECT t FROM w WHERE id = 20`))
	require.Equal(t, "inserted after the diff", e.scalar("n2", `SELECT t FROM w WHERE id = 70`))
	rep := e.report(id)
	require.Equal(t, repair.ReasonChangedSinceDiff, rep[`n2 {"id": 20}`].Reason)
	require.Equal(t, "written after the diff", rep[`n2 {"id": 20}`].Before["t"])
	require.False(t, rep[`n2 {"id": 20}`].Applied)
	require.Equal(t, []int64{20, 70}, e.differingIDs())

	// Turning the check off overwrites them.
	_, s = e.completedRepair(diff, `'n1', check_unchanged => false`)
	require.True(t, s.FullyRepaired, "%+v", s)
	e.requireInSync("public.w")
}

func TestRepairDryRunChangesNothing(t *testing.T) {
	t.Parallel()
	e := wideEnv(t)
	plantWideDrift(e)
	diff := e.diffID("public.w")
	id, s := e.completedRepair(diff, `'n1', dry_run => true`)
	require.True(t, s.DryRun)
	require.False(t, s.FullyRepaired)
	require.Equal(t, repair.NodePlanned, s.Nodes["n2"].Status)
	require.Empty(t, s.RepairedNodes)
	require.EqualValues(t, 3, s.Inserted)
	require.EqualValues(t, 2, s.Deleted)
	rep := e.report(id)
	require.Equal(t, repair.ActionUpdate, rep[`n2 {"id": 10}`].Action)
	require.Equal(t, "text 10", rep[`n2 {"id": 10}`].After["t"])
	require.False(t, rep[`n2 {"id": 10}`].Applied)
	require.Equal(t, []int64{-7, 10, 20, 30, 40, 50, 60, 70, 71, 9000}, e.differingIDs())
	require.Equal(t, "changed", e.scalar("n2", `SELECT t FROM w WHERE id = 10`))
}

func TestRepairGenerateReportIsACEShaped(t *testing.T) {
	t.Parallel()
	e := wideEnv(t)
	plantWideDrift(e)
	_, task := e.repair(e.diffID("public.w"), `'n1', generate_report => true`)
	require.Equal(t, sqlapi.StatusCompleted, task.Status)
	var res struct {
		RepairReport struct {
			OperationType string                                 `json:"operation_type"`
			Mode          string                                 `json:"mode"`
			SuppliedArgs  map[string]any                         `json:"supplied_args"`
			Changes       map[string]map[string][]map[string]any `json:"changes"`
		} `json:"repair_report"`
	}
	require.NoError(t, jsonUnmarshal(task.Result, &res))
	r := res.RepairReport
	require.Equal(t, "table-repair", r.OperationType)
	require.Equal(t, "LIVE_RUN", r.Mode)
	require.Equal(t, "n1", r.SuppliedArgs["source_of_truth"])
	require.Len(t, r.Changes["n2"]["deleted_rows"], 1)
	require.Len(t, r.Changes["n2"]["upserted_rows"], 5)
	require.EqualValues(t, -7, r.Changes["n2"]["deleted_rows"][0]["id"])
}

func TestRepairLatestCommitWins(t *testing.T) {
	t.Parallel()
	e := wideEnv(t)
	e.Node("n2").Exec(t, `UPDATE w SET t = 'n2 first' WHERE id IN (1, 2, 3)`)
	e.Node("n3").Exec(t, `UPDATE w SET t = 'n3 later' WHERE id IN (2, 3)`)
	e.Node("n1").Exec(t, `UPDATE w SET t = 'n1 last' WHERE id = 3`)
	e.Node("n3").Exec(t, `INSERT INTO w (id, t) VALUES (1000, 'new on n3')`)
	diff := e.diffID("public.w")
	_, s := e.completedRepair(diff, `strategy => 'latest_commit'`)
	require.True(t, s.FullyRepaired, "%+v", s)
	require.Equal(t, "latest_commit", s.Mode)
	for _, n := range []string{"n1", "n2", "n3"} {
		require.Equal(t, "n2 first", e.scalar(n, `SELECT t FROM w WHERE id = 1`), n)
		require.Equal(t, "n3 later", e.scalar(n, `SELECT t FROM w WHERE id = 2`), n)
		require.Equal(t, "n1 last", e.scalar(n, `SELECT t FROM w WHERE id = 3`), n)
	}
	e.requireInSync("public.w")
}

func TestRepairLatestCommitTieIsListedNotGuessed(t *testing.T) {
	t.Parallel()
	e := wideEnv(t)
	e.Node("n2").Exec(t, `UPDATE w SET t = 'n2' WHERE id IN (1, 2)`)
	e.Node("n3").Exec(t, `UPDATE w SET t = 'n3' WHERE id IN (1, 2)`)
	diff := e.diffID("public.w")
	// Give key 1 the same commit instant on every node, and key 2 no timestamp on n3.
	e.Node("n1").Exec(t, `UPDATE ace.diff_results SET meta = (SELECT jsonb_object_agg(k, jsonb_set(v, '{commit_ts}', '"2030-01-01T00:00:00Z"'))
		FROM jsonb_each(meta) AS m(k, v)) WHERE task_id = $1 AND pk = '{"id": 1}'`, diff)
	e.Node("n1").Exec(t, `UPDATE ace.diff_results SET meta = jsonb_set(meta, '{n3,commit_ts}', 'null') WHERE task_id = $1 AND pk = '{"id": 2}'`, diff)

	id, s := e.completedRepair(diff, `strategy => 'latest_commit'`)
	require.False(t, s.FullyRepaired)
	require.EqualValues(t, 3, s.SkippedByReason[repair.ReasonCommitTSTie])
	require.EqualValues(t, 3, s.SkippedByReason[repair.ReasonMissingCommitTS])
	require.Equal(t, repair.ReasonCommitTSTie, e.report(id)[`n2 {"id": 1}`].Reason)
	require.Equal(t, []int64{1, 2}, e.differingIDs(), "nothing was guessed")
}

func TestRepairInvalidOptionsFailAtOnce(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.v (id int PRIMARY KEY, x text)`)
	e.ExecAll(`INSERT INTO v SELECT g, 'x' FROM generate_series(1, 10) g`)
	e.Node("n2").Exec(t, `UPDATE v SET x = 'y' WHERE id = 1`)
	diff := e.diffID("public.v")
	n1 := e.Node("n1")
	// The cases share one diff on one cluster: they run sequentially, without t.Parallel.
	for _, c := range []struct{ args, msg string }{
		{`bidirectional => true, upsert_only => true`, "bidirectional and upsert_only cannot be combined"},
		{`bidirectional => true, fix_nulls => true`, "bidirectional and fix_nulls cannot be combined"},
		{`fix_nulls => true, insert_only => true`, "fix_nulls and insert_only cannot be combined"},
		{`fix_nulls => true, upsert_only => true`, "fix_nulls and upsert_only cannot be combined"},
		{`'n1', insert_only => true, upsert_only => true`, "insert_only and upsert_only cannot be combined"},
		{`'n1', strategy => 'latest_commit'`, "strategy and source_of_truth cannot be combined"},
		{`strategy => 'oldest'`, `unknown strategy "oldest"`},
		{`dry_run => true`, "source_of_truth is required"},
		{`'n9'`, "source_of_truth n9 is not one of the diff's nodes (n1, n2, n3)"},
		{`'n1', target_nodes => ARRAY['n1']`, "node n1 is the source of truth and cannot also be repaired"},
		{`'n1', target_nodes => ARRAY['n7']`, "node(s) n7 are not among the diff's nodes"},
	} {
		t.Run(c.args, func(t *testing.T) {
			var id string
			err := n1.Pool.QueryRow(t.Context(), `SELECT ace.table_repair($1, `+c.args+`)`, diff).Scan(&id)
			require.ErrorContains(t, err, c.msg, c.args)
		})
	}
	var id string
	err := n1.Pool.QueryRow(t.Context(), `SELECT ace.table_repair('00000000-0000-0000-0000-000000000000', 'n1')`).Scan(&id)
	require.ErrorContains(t, err, "diff task 00000000-0000-0000-0000-000000000000 does not exist")
	repair, _ := e.completedRepair(diff, `'n1', dry_run => true`)
	err = n1.Pool.QueryRow(t.Context(), `SELECT ace.table_repair($1, 'n1')`, repair).Scan(&id)
	require.ErrorContains(t, err, "is a table-repair task, not a diff")
}

func TestRepairNeedsTheRightsToWrite(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.v (id int PRIMARY KEY, x text)`)
	e.ExecAll(`INSERT INTO v SELECT g, 'x' FROM generate_series(1, 10) g`)
	role := "ace_test_inserter"
	e.ExecAll(`DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '` + role + `') THEN CREATE ROLE ` + role + ` LOGIN; END IF; END $$`)
	e.ExecAll(`GRANT SELECT, INSERT ON v TO ` + role)
	e.Node("n2").Exec(t, `UPDATE v SET x = 'y' WHERE id = 1`)
	ctx := t.Context()
	conn, err := e.Node("n1").Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	_, err = conn.Exec(ctx, `SET ROLE `+role)
	require.NoError(t, err)
	var diff, id string
	require.NoError(t, conn.QueryRow(ctx, `SELECT ace.table_diff('public.v')`).Scan(&diff))
	_, err = conn.Exec(ctx, `SELECT ace.wait($1)`, diff)
	require.NoError(t, err)
	err = conn.QueryRow(ctx, `SELECT ace.table_repair($1, 'n1')`, diff).Scan(&id)
	require.ErrorContains(t, err, "permission denied: role "+role+" lacks DELETE, UPDATE on table public.v, which this repair needs")
	require.NoError(t, conn.QueryRow(ctx, `SELECT ace.table_repair($1, 'n1', insert_only => true)`, diff).Scan(&id))
	_, err = conn.Exec(ctx, `SELECT ace.wait($1)`, id)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `RESET ROLE`)
	require.NoError(t, err)
}
