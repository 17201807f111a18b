package agent_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// planTable is the table the repair-plan tests repair, the same on every node.
const planTable = `CREATE TABLE acc (id int PRIMARY KEY, v text, qty int, updated_at timestamptz);
	INSERT INTO acc SELECT g, 'v' || g, g, '2025-01-01 00:00:00+00' FROM generate_series(1, 8) g`

// tableRows reads a node's whole table as text, in key order.
func (e *diffEnv) tableRows(node string) []string {
	e.t.Helper()
	rows, err := e.Node(node).Pool.Query(context.Background(), `SELECT format('%s|%s|%s|%s', id, v, qty, updated_at) FROM acc ORDER BY id`)
	require.NoError(e.t, err)
	var out []string
	for rows.Next() {
		var s string
		require.NoError(e.t, rows.Scan(&s))
		out = append(out, s)
	}
	require.NoError(e.t, rows.Err())
	return out
}

// ruleOf is the rule ace.repair_rows names for a key on a node.
func (e *diffEnv) ruleOf(id uuid.UUID, node string, key int) string {
	e.t.Helper()
	var rule string
	require.NoError(e.t, e.Node("n1").Pool.QueryRow(context.Background(),
		`SELECT coalesce(rule, '') FROM ace.repair_rows($1) WHERE node = $2 AND (pk->>'id')::int = $3`, id, node, key).Scan(&rule))
	return rule
}

// A two-node plan with an override, a pick_freshest rule, an insert-only rule and a delete rule
// (and a default that skips): the exact rows each node ends with, and the keys per rule.
func TestRepairPlanTwoNodes(t *testing.T) {
	t.Parallel()
	e := setup(t, planTable)
	n1, n2 := e.Node("n1"), e.Node("n2")
	n2.Exec(t, `UPDATE acc SET v = 'n2 wins' WHERE id = 1`)                                                   // override: keep n2
	n1.Exec(t, `UPDATE acc SET v = 'n1 old', updated_at = '2025-03-01 10:00+00' WHERE id = 2`)                // freshest: n2
	n2.Exec(t, `UPDATE acc SET v = 'n2 new', updated_at = '2025-03-01 11:00+00' WHERE id = 2`)                //
	n1.Exec(t, `UPDATE acc SET v = 'n1 new', qty = 30, updated_at = '2025-03-02 00:00:00.5+00' WHERE id = 3`) // freshest: n1
	n2.Exec(t, `UPDATE acc SET v = 'n2 old', updated_at = '2025-03-02 00:00:00+00' WHERE id = 3`)             //
	n2.Exec(t, `DELETE FROM acc WHERE id = 4`)                                                                // insert on n2
	n2.Exec(t, `INSERT INTO acc VALUES (9, 'stray', 9, '2025-01-01+00')`)                                     // delete from n2
	n2.Exec(t, `UPDATE acc SET qty = 50 WHERE id = 5`)                                                        // default: skip
	diff := e.diffOn("n1", "n2")
	plan := `{"version": 1, "tables": {"public.acc": {
		"default_action": {"type": "skip"},
		"row_overrides": [{"name": "pin_1", "pk": {"id": 1}, "action": {"type": "keep_n2"}}],
		"rules": [
			{"name": "freshest", "diff_type": ["row_mismatch"], "columns_changed": ["v"],
			 "action": {"type": "custom", "helpers": {"pick_freshest": {"key": "updated_at", "tie": "n1"}}}},
			{"name": "insert_missing", "diff_type": ["missing_on_n2"], "action": {"type": "apply_from", "from": "n1", "mode": "insert"}},
			{"name": "drop_strays", "diff_type": ["missing_on_n1"], "action": {"type": "delete"}}]}}}`
	_, err := n1.Pool.Exec(context.Background(), `SELECT ace.save_repair_plan('two_nodes', $1::jsonb)`, plan)
	require.NoError(t, err)
	id, s := e.completedRepair(diff, `repair_plan => 'two_nodes'`)

	require.Equal(t, "repair_plan", s.Mode)
	require.Equal(t, "two_nodes", s.RepairPlan)
	require.Equal(t, map[string]int64{"pin_1": 1, "freshest": 2, "insert_missing": 1, "drop_strays": 1, "table_default": 1}, s.RuleMatches)
	want := []string{
		"1|n2 wins|1|2025-01-01 00:00:00+00",
		"2|n2 new|2|2025-03-01 11:00:00+00",
		"3|n1 new|30|2025-03-02 00:00:00.5+00",
		"4|v4|4|2025-01-01 00:00:00+00",
		"5|v5|5|2025-01-01 00:00:00+00",
		"6|v6|6|2025-01-01 00:00:00+00",
		"7|v7|7|2025-01-01 00:00:00+00",
		"8|v8|8|2025-01-01 00:00:00+00",
	}
	require.Equal(t, want, e.tableRows("n1"))
	want[4] = "5|v5|50|2025-01-01 00:00:00+00" // skipped by the default
	require.Equal(t, want, e.tableRows("n2"))
	require.Equal(t, "pin_1", e.ruleOf(id, "n1", 1))
	require.Equal(t, "freshest", e.ruleOf(id, "n1", 2))
	require.Equal(t, "freshest", e.ruleOf(id, "n2", 3))
	require.Equal(t, "insert_missing", e.ruleOf(id, "n2", 4))
	require.Equal(t, "drop_strays", e.ruleOf(id, "n2", 9))
	require.Equal(t, "table_default", e.ruleOf(id, "n2", 5))
	require.EqualValues(t, 2, s.SkippedByReason[repair.ReasonPlanSkip], "the default's skip, on both nodes")
	require.Zero(t, s.Unresolved)
}

// diffOn diffs acc on the given nodes; it must complete.
func (e *diffEnv) diffOn(nodes ...string) uuid.UUID {
	e.t.Helper()
	id, task := e.diff(`'public.acc', nodes => $1`, nodes)
	require.Equal(e.t, sqlapi.StatusCompleted, task.Status, "diff error: %v", task.Error)
	return id
}

// A row no override, rule or default decides fails the whole repair before anything is written.
func TestRepairPlanWithoutDefaultWritesNothing(t *testing.T) {
	t.Parallel()
	e := setup(t, planTable)
	n2 := e.Node("n2")
	n2.Exec(t, `DELETE FROM acc WHERE id IN (1, 2)`)
	n2.Exec(t, `UPDATE acc SET v = 'drift' WHERE id = 7`)
	diff := e.diffOn("n1", "n2")
	_, task := e.repair(diff, `plan => $2::jsonb`, `{"tables": {"public.acc": {"rules": [
		{"name": "inserts", "diff_type": ["missing_on_n2"], "action": {"type": "keep_n1"}}]}}}`)
	require.Equal(t, sqlapi.StatusFailed, task.Status)
	require.Contains(t, errText(task), "no default action configured in repair plan")
	require.Contains(t, errText(task), `{"id": 7}`)
	require.Len(t, e.tableRows("n2"), 6, "the rows the rule would insert were not inserted")
	require.Equal(t, "drift", e.scalar("n2", `SELECT v FROM acc WHERE id = 7`))
	require.Len(t, e.tableRows("n1"), 8)
}

// With three nodes a positional name has no meaning: the plan is refused, naming the fix; with
// node names the same intent converges.
func TestRepairPlanThreeNodes(t *testing.T) {
	t.Parallel()
	e := setup(t, planTable)
	n2, n3 := e.Node("n2"), e.Node("n3")
	n2.Exec(t, `UPDATE acc SET v = 'n2 only' WHERE id = 1`)
	n3.Exec(t, `DELETE FROM acc WHERE id = 2`)
	n3.Exec(t, `UPDATE acc SET v = 'n3 eu', qty = 300 WHERE id = 3`)
	n2.Exec(t, `UPDATE acc SET qty = 200 WHERE id = 3`)
	diff := e.diffOn("n1", "n2", "n3")

	t.Run("positional names are refused", func(t *testing.T) {
		for _, c := range []struct{ plan, want string }{
			{`{"tables": {"public.acc": {"default_action": {"type": "keep_n1"}}}}`, `name the node instead ({"type": "keep", "node": "n3"})`},
			{`{"tables": {"public.acc": {"rules": [{"diff_type": ["missing_on_n2"], "action": {"type": "keep", "node": "n1"}}],
				"default_action": {"type": "skip"}}}}`, ""},
		} {
			_, task := e.repair(diff, `plan => $2::jsonb, dry_run => true`, c.plan)
			if c.want == "" {
				require.Equal(t, sqlapi.StatusCompleted, task.Status, "n1 and n2 are node names here: %s", task.Error)
				continue
			}
			require.Equal(t, sqlapi.StatusFailed, task.Status)
			require.Contains(t, errText(task), "keep_n1 keeps a position")
			require.Contains(t, errText(task), "in a diff of 3 nodes (n1, n2, n3)")
			require.Contains(t, errText(task), c.want)
		}
	})
	t.Run("node names converge", func(t *testing.T) {
		_, s := e.completedRepair(diff, `plan => $2::jsonb, atomic => true`, `{"tables": {"public.acc": {
			"rules": [{"name": "n3_rows", "when": "n3.v LIKE '% eu'", "action": {"type": "keep", "node": "n3"}}],
			"default_action": {"type": "keep", "node": "n1"}}}}`)
		require.Equal(t, map[string]int64{"n3_rows": 1, "table_default": 2}, s.RuleMatches)
		require.True(t, s.Atomic, "the plan's writes go through the two-phase commit")
		e.requireInSync("public.acc")
		require.Equal(t, "n3 eu", e.scalar("n2", `SELECT v FROM acc WHERE id = 3`))
		require.Equal(t, "v1", e.scalar("n2", `SELECT v FROM acc WHERE id = 1`))
		require.EqualValues(t, 1, e.scalar("n3", `SELECT count(*) FROM acc WHERE id = 2`))
	})
}

// when compares values as their column types: a timestamp in the year 10000 is later than one
// in 9999, though as text it sorts first (ACE's lexical trap), and a literal is read as the
// column's type.
func TestRepairPlanWhenComparesTimestampsAsTimestamps(t *testing.T) {
	t.Parallel()
	e := setup(t, planTable)
	n1, n2 := e.Node("n1"), e.Node("n2")
	n1.Exec(t, `UPDATE acc SET v = 'n1', updated_at = '9999-12-31 00:00+00' WHERE id = 1`)
	n2.Exec(t, `UPDATE acc SET v = 'n2', updated_at = '10000-01-01 00:00+00' WHERE id = 1`)
	n1.Exec(t, `UPDATE acc SET v = 'n1', updated_at = '2025-01-10 00:00+00' WHERE id = 2`)
	n2.Exec(t, `UPDATE acc SET v = 'n2', updated_at = '2025-01-09 00:00+00' WHERE id = 2`)
	diff := e.diffOn("n1", "n2")
	_, s := e.completedRepair(diff, `plan => $2::jsonb`, `{"tables": {"public.acc": {
		"rules": [{"name": "n2_newer", "when": "n2.updated_at > n1.updated_at", "action": {"type": "keep_n2"}},
		          {"name": "n1_after_jan_5", "when": "n1.updated_at > '2025-1-5'", "action": {"type": "keep_n1"}}]}}}`)
	require.Equal(t, map[string]int64{"n2_newer": 1, "n1_after_jan_5": 1}, s.RuleMatches)
	require.Equal(t, "n2", e.scalar("n1", `SELECT v FROM acc WHERE id = 1`), "10000-01-01 is later than 9999-12-31")
	require.Equal(t, "n1", e.scalar("n2", `SELECT v FROM acc WHERE id = 2`), "2025-01-10 is after '2025-1-5'")

	t.Run("a when outside the table_filter allow-list is refused", func(t *testing.T) {
		n2.Exec(t, `UPDATE acc SET v = 'again' WHERE id = 3`)
		diff := e.diffOn("n1", "n2")
		for _, when := range []string{
			`n1.v = (SELECT current_user)`,
			`set_config('role', 'postgres', true) IS NOT NULL`,
			`n1.v = 'a') OR (true`,
		} {
			_, task := e.repair(diff, `plan => $2::jsonb`, `{"tables": {"public.acc": {"default_action": {"type": "skip"},
				"rules": [{"name": "bad", "when": `+jsonString(when)+`, "action": {"type": "keep_n1"}}]}}}`)
			require.Equal(t, sqlapi.StatusFailed, task.Status, when)
			require.Contains(t, errText(task), "rule (bad): invalid when expression", when)
		}
		require.Equal(t, "again", e.scalar("n2", `SELECT v FROM acc WHERE id = 3`))
	})
}

// allow_stale_repairs: false keeps the compare-and-set for its rule's rows even when the
// repair turned it off; true writes over a row that changed since the diff.
func TestRepairPlanAllowStaleRepairs(t *testing.T) {
	t.Parallel()
	e := setup(t, planTable)
	n2 := e.Node("n2")
	n2.Exec(t, `UPDATE acc SET v = 'drift' WHERE id IN (1, 2)`)
	diff := e.diffOn("n1", "n2")
	n2.Exec(t, `UPDATE acc SET v = 'changed after the diff' WHERE id IN (1, 2)`)
	_, s := e.completedRepair(diff, `check_unchanged => true, plan => $2::jsonb`, `{"tables": {"public.acc": {
		"row_overrides": [{"pk": {"id": 1}, "action": {"type": "keep_n1", "allow_stale_repairs": true}}],
		"default_action": {"type": "keep_n1"}}}}`)
	require.EqualValues(t, 1, s.SkippedByReason[repair.ReasonChangedSinceDiff])
	require.Equal(t, "v1", e.scalar("n2", `SELECT v FROM acc WHERE id = 1`), "allow_stale_repairs: true overwrites")
	require.Equal(t, "changed after the diff", e.scalar("n2", `SELECT v FROM acc WHERE id = 2`), "the default keeps the check")
}

// The options a plan replaces are refused with it, and so are a saved plan and an inline one
// together, or a name the submitter has no plan of.
func TestRepairPlanArgumentErrors(t *testing.T) {
	t.Parallel()
	e := setup(t, planTable)
	e.Node("n2").Exec(t, `UPDATE acc SET v = 'drift' WHERE id = 1`)
	diff := e.diffOn("n1", "n2")
	plan := `{"tables": {"public.acc": {"default_action": {"type": "keep_n1"}}}}`
	_, err := e.Node("n1").Pool.Exec(context.Background(), `SELECT ace.save_repair_plan('p', $1::jsonb)`, plan)
	require.NoError(t, err)
	for _, c := range []struct {
		args     string
		withPlan bool
		want     string
	}{
		{`repair_plan => 'p', plan => $2::jsonb`, true, "repair_plan and plan cannot be combined"},
		{`repair_plan => 'nope'`, false, `repair plan "nope" does not exist`},
		{`plan => $2::jsonb, source_of_truth => 'n1'`, true, "a repair plan cannot be combined with source_of_truth"},
		{`plan => $2::jsonb, fix_nulls => true`, true, "a repair plan cannot be combined with fix_nulls"},
		{`plan => '{"tables": {"public.other": {"default_action": {"type": "skip"}}}}'::jsonb`, false, "repair plan does not contain table public.acc"},
	} {
		params := []any{diff}
		if c.withPlan {
			params = append(params, plan)
		}
		var id uuid.UUID
		err := e.Node("n1").Pool.QueryRow(context.Background(), `SELECT ace.table_repair($1, `+c.args+`)`, params...).Scan(&id)
		require.ErrorContains(t, err, c.want, c.args)
	}
}

// jsonString is s as a JSON string literal.
func jsonString(s string) string {
	raw, _ := json.Marshal(s)
	return string(raw)
}

// custom builds a row: custom_row with its templates, coalesce_priority for the other columns,
// and every node gets the same row.
func TestRepairPlanCustomRows(t *testing.T) {
	t.Parallel()
	e := setup(t, planTable)
	n1, n2 := e.Node("n1"), e.Node("n2")
	n1.Exec(t, `UPDATE acc SET v = NULL WHERE id = 1`)
	n2.Exec(t, `UPDATE acc SET v = 'from n2', qty = NULL WHERE id = 1`)
	n2.Exec(t, `UPDATE acc SET v = 'b2' WHERE id = 2`)
	n1.Exec(t, `DELETE FROM acc WHERE id = 3`)
	diff := e.diffOn("n1", "n2")
	_, s := e.completedRepair(diff, `plan => $2::jsonb`, `{"tables": {"public.acc": {
		"row_overrides": [{"name": "template", "pk": {"id": 2}, "action": {"type": "custom", "custom_row": {"v": "fixed {{n2.v}} (was {{n1.v}})"}}}],
		"rules": [{"name": "fill", "diff_type": ["missing_on_n1"], "action": {"type": "bidirectional"}},
		          {"name": "coalesce", "columns_changed": ["v", "qty"], "action": {"type": "custom", "helpers": {"coalesce_priority": ["n1", "n2"]}}}]}}}`)
	require.Equal(t, map[string]int64{"template": 1, "fill": 1, "coalesce": 1}, s.RuleMatches)
	require.EqualValues(t, 1, s.Nodes["n1"].Inserted, "bidirectional fills the row n1 lacks")
	for _, n := range []string{"n1", "n2"} {
		rows := e.tableRows(n)
		require.Equal(t, "1|from n2|1|2025-01-01 00:00:00+00", rows[0], n)
		require.Equal(t, "2|fixed b2 (was v2)|2|2025-01-01 00:00:00+00", rows[1], n)
	}
	_, rows := e.completedDiff(`'public.acc', nodes => $1`, []string{"n1", "n2"})
	require.Empty(t, rows)
}
