package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

const acePlans = "../../testdata/ace-repair-plans"

// aceRefuses are ACE's documented snippets that ACE's own validator refuses, with its message.
var aceRefuses = map[string]string{
	"01-classic-source-of-truth": "table public.accounts rule (eu_from_n2): keep_n2 incompatible with diff_type missing_on_n2",
	"05d-split-by-origin":        "table public.orders rule (origin_n2): keep_n2 incompatible with diff_type missing_on_n2",
}

// ACE's example plans load as they are through the CLI: repair-plan import saves each (and
// refuses the one ACE refuses, with ACE's message), and table-repair -p takes the example file
// and repairs by it.
func TestACEExamplePlansThroughTheCLI(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	e.ExecAll(`CREATE TABLE public.inventory (id int PRIMARY KEY, qty int)`)
	e.ExecAll(`INSERT INTO public.inventory SELECT g, g FROM generate_series(1, 5) g`)
	n1, n2 := e.Node("n1"), e.Node("n2")
	n1.StartAgent(t)

	files, err := filepath.Glob(filepath.Join(acePlans, "*.yaml"))
	require.NoError(t, err)
	require.Len(t, files, 18)
	t.Run("import", func(t *testing.T) {
		for _, f := range files {
			r := ace(t, n1.DSN, "repair-plan", "import", f)
			name := strings.TrimSuffix(filepath.Base(f), ".yaml")
			if refusal, ok := aceRefuses[name]; ok {
				require.Equal(t, exitError, r.code, r)
				require.Contains(t, r.stderr, refusal)
				continue
			}
			require.Equal(t, exitOK, r.code, "%s: %v", f, r)
			require.Contains(t, r.stdout, "saved repair plan "+name+" (")
		}
		var tables string
		require.NoError(t, n1.Pool.QueryRow(t.Context(),
			`SELECT string_agg(k, ',' ORDER BY k) FROM ace.repair_plans, jsonb_object_keys(plan->'tables') k WHERE plan_name = 'repair-plan-latest-wins'`).Scan(&tables))
		require.Equal(t, "public.customers,public.inventory,public.orders", tables, "the aliased rule set is every table's")
	})

	// n1 changes row 1, then n2 does, later; then n1 changes row 2 after n2 did.
	n1.Exec(t, `UPDATE inventory SET qty = 10 WHERE id = 1`)
	n2.Exec(t, `UPDATE inventory SET qty = 20 WHERE id = 1`)
	n2.Exec(t, `UPDATE inventory SET qty = 200 WHERE id = 2`)
	n1.Exec(t, `UPDATE inventory SET qty = 100 WHERE id = 2`)
	r := ace(t, n1.DSN, "table-diff", "public.inventory", "--nodes", "n1,n2", "-q")
	require.Equal(t, exitDiffers, r.code, r)
	diff := submittedID(t, r).String()

	t.Run("a saved plan by name, dry run", func(t *testing.T) {
		r := ace(t, n1.DSN, "table-repair", "--diff-task", diff, "-p", "repair-plan-latest-wins", "--dry-run", "--json")
		require.Equal(t, exitOK, r.code, r)
		require.Contains(t, r.stdout, `"repair_plan": "repair-plan-latest-wins"`)
		require.EqualValues(t, 10, scalarOn(t, n1, `SELECT qty FROM inventory WHERE id = 1`), "a dry run changes nothing")
	})
	t.Run("the file", func(t *testing.T) {
		r := ace(t, n1.DSN, "table-repair", "--diff-task", diff, "-p", filepath.Join(acePlans, "repair-plan-latest-wins.yaml"), "--json")
		require.Equal(t, exitOK, r.code, r)
		require.Contains(t, r.stdout, `"latest_commit_wins": 2`)
		for _, n := range []*testcluster.Node{n1, n2} {
			require.EqualValues(t, 20, scalarOn(t, n, `SELECT qty FROM inventory WHERE id = 1`), n.Name)
			require.EqualValues(t, 100, scalarOn(t, n, `SELECT qty FROM inventory WHERE id = 2`), n.Name)
		}
	})
	t.Run("rule usage", func(t *testing.T) {
		r := ace(t, n1.DSN, "table-repair", "--diff-task", diff, "-p", "repair-plan-latest-wins", "--dry-run")
		require.Equal(t, exitOK, r.code, r)
		require.Contains(t, r.stdout, "DRY RUN: public.inventory (repair_plan), nothing was changed\n")
		require.Contains(t, r.stdout, "  rule usage (repair-plan-latest-wins): latest_commit_wins 2\n")
	})
	t.Run("a missing file", func(t *testing.T) {
		r := ace(t, n1.DSN, "table-repair", "--diff-task", diff, "-p", "no/such/plan.yaml")
		require.Equal(t, exitError, r.code, r)
		require.Contains(t, r.stderr, "repair plan file no/such/plan.yaml does not exist")
	})
	t.Run("not YAML", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		require.NoError(t, os.WriteFile(bad, []byte("tables: [unclosed"), 0o600))
		r := ace(t, n1.DSN, "repair-plan", "import", bad)
		require.Equal(t, exitError, r.code, r)
		require.Contains(t, r.stderr, "not YAML or JSON")
	})
}

func scalarOn(t *testing.T, n *testcluster.Node, sql string) any {
	t.Helper()
	var v any
	require.NoError(t, n.Pool.QueryRow(t.Context(), sql).Scan(&v))
	return v
}
