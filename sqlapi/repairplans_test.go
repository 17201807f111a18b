package sqlapi_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// Every error ace.validate_repair_plan raises, with ACE's text where ACE has one.
func TestValidateRepairPlanErrors(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	e.Node("n1").Exec(t, `CREATE TABLE public.acc (id int PRIMARY KEY, region text, amount numeric)`)
	pool := e.Node("n1").Pool
	rule := func(r string) string { return `{"tables": {"public.acc": {"rules": [` + r + `]}}}` }
	action := func(a string) string { return `{"tables": {"public.acc": {"default_action": ` + a + `}}}` }
	for _, c := range []struct {
		name, plan, table, want string
	}{
		{"not an object", `[]`, "", "invalid repair plan: repair plan is nil"},
		{"unknown top-level key", `{"tables": {"t": {}}, "rulez": []}`, "", `the plan: unknown key "rulez"`},
		{"negative version", `{"version": -1, "tables": {"t": {}}}`, "", "version must be greater than zero"},
		{"fractional version", `{"version": 1.5, "tables": {"t": {}}}`, "", "version must be greater than zero"},
		{"unknown version", `{"version": 2, "tables": {"t": {}}}`, "", "version 2 is not known"},
		{"no tables", `{"version": 1}`, "", "at least one table entry is required"},
		{"empty tables", `{"tables": {}}`, "", "at least one table entry is required"},
		{"table plan not an object", `{"tables": {"public.acc": []}}`, "", "table public.acc: its plan must be an object"},
		{"rules not a list", `{"tables": {"public.acc": {"rules": {}}}}`, "", "rules and row_overrides must be lists"},
		{"rule without selector", rule(`{"name": "r", "action": {"type": "skip"}}`), "",
			"table public.acc rule[0] (r) must specify at least one selector (pk_in, diff_type, columns_changed, when)"},
		{"unnamed rule without selector", rule(`{"action": {"type": "skip"}}`), "",
			"table public.acc rule[0] must specify at least one selector"},
		{"pk_in without equals or range", rule(`{"name": "r", "pk_in": [{}], "action": {"type": "skip"}}`), "",
			"table public.acc rule (r) pk_in[0] must specify equals or range"},
		{"range without to", rule(`{"name": "r", "pk_in": [{"range": {"from": 1}}], "action": {"type": "skip"}}`), "",
			"table public.acc rule (r) pk_in[0] range requires both from and to"},
		{"empty diff_type", rule(`{"name": "r", "diff_type": [""], "action": {"type": "skip"}}`), "",
			"table public.acc rule (r) diff_type[0] cannot be empty"},
		{"unknown diff_type", rule(`{"name": "r", "diff_type": ["row_changed"], "action": {"type": "skip"}}`), "",
			"table public.acc rule (r) diff_type[0] must be one of [row_mismatch missing_on_n1 missing_on_n2 deleted_on_n1 deleted_on_n2]"},
		{"columns_changed not names", rule(`{"name": "r", "columns_changed": [1], "action": {"type": "skip"}}`), "",
			"columns_changed must be a list of column names"},
		{"when not a string", rule(`{"name": "r", "diff_type": ["row_mismatch"], "when": true, "action": {"type": "skip"}}`), "",
			"table public.acc rule (r): invalid when expression"},
		{"unknown rule key", rule(`{"name": "r", "diff_typ": ["row_mismatch"], "action": {"type": "skip"}}`), "",
			`unknown key "diff_typ"`},
		{"no action", rule(`{"name": "r", "diff_type": ["row_mismatch"]}`), "", "table public.acc rule (r) action cannot be nil"},
		{"unknown action", action(`{"type": "keep_n3"}`), "", `table public.acc table.default_action: unsupported action type "keep_n3"`},
		{"unknown action key", action(`{"type": "skip", "form": "n1"}`), "", `unknown key "form"`},
		{"keep without node", action(`{"type": "keep"}`), "", "keep requires 'node'"},
		{"apply_from without from", action(`{"type": "apply_from"}`), "", "table public.acc table.default_action: apply_from requires 'from' (n1 or n2)"},
		{"apply_from bad mode", action(`{"type": "apply_from", "from": "n1", "mode": "merge"}`), "",
			"apply_from mode must be one of replace|upsert|insert"},
		{"custom with nothing", action(`{"type": "custom"}`), "", "custom requires custom_row or helpers"},
		{"coalesce_priority not names", action(`{"type": "custom", "helpers": {"coalesce_priority": [""]}}`), "",
			"coalesce_priority entries must be n1 or n2"},
		{"pick_freshest without key", action(`{"type": "custom", "helpers": {"pick_freshest": {"tie": "n1"}}}`), "",
			"pick_freshest requires key"},
		{"pick_freshest bad tie", action(`{"type": "custom", "helpers": {"pick_freshest": {"key": "amount", "tie": 1}}}`), "",
			"pick_freshest.tie must be n1 or n2"},
		{"allow_stale_repairs not boolean", action(`{"type": "skip", "allow_stale_repairs": "no"}`), "",
			"allow_stale_repairs must be true or false"},
		{"global default", `{"default_action": {"type": "nope"}, "tables": {"t": {}}}`, "", `table global default_action: unsupported action type "nope"`},
		{"override without pk", `{"tables": {"public.acc": {"row_overrides": [{"action": {"type": "skip"}}]}}}`, "",
			"table public.acc row_override[0] must provide pk map"},
		{"keep_n1 on missing_on_n1", rule(`{"name": "r", "diff_type": ["missing_on_n1"], "action": {"type": "keep_n1"}}`), "",
			"table public.acc rule (r): keep_n1 incompatible with diff_type missing_on_n1"},
		{"apply_from n2 on deleted_on_n2", rule(`{"name": "r", "diff_type": ["deleted_on_n2"], "action": {"type": "apply_from", "from": "n2"}}`), "",
			"table public.acc rule (r): apply_from n2 incompatible with diff_type deleted_on_n2"},
		{"keep a node where it is missing", rule(`{"name": "r", "diff_type": ["missing_on_n3"], "action": {"type": "keep", "node": "n3"}}`), "",
			"keep n3 incompatible with diff_type missing_on_n3"},
		{"insert on row_mismatch", rule(`{"name": "r", "diff_type": ["row_mismatch"], "action": {"type": "apply_from", "from": "n1", "mode": "insert"}}`), "",
			"table public.acc rule (r): apply_from insert incompatible with diff_type row_mismatch"},
		{"table not in plan", `{"tables": {"public.other": {"default_action": {"type": "skip"}}}}`, "public.acc",
			"repair plan does not contain table public.acc"},
		{"unknown column in columns_changed", rule(`{"name": "r", "columns_changed": ["colour"], "action": {"type": "skip"}}`), "public.acc",
			`columns_changed names column "colour"`},
		{"unknown custom_row column", action(`{"type": "custom", "custom_row": {"colour": "red"}}`), "public.acc",
			`custom_row names column "colour"`},
		{"unknown pick_freshest key", action(`{"type": "custom", "helpers": {"pick_freshest": {"key": "updated_at"}}}`), "public.acc",
			`pick_freshest key "updated_at" is neither a column of public.acc nor commit_ts`},
		{"override pk not the key", `{"tables": {"public.acc": {"row_overrides": [{"pk": {"region": "eu"}, "action": {"type": "skip"}}]}}}`, "public.acc",
			"pk must name exactly the primary key columns (id)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var table *string
			if c.table != "" {
				table = &c.table
			}
			_, err := pool.Exec(context.Background(), `SELECT ace.validate_repair_plan($1::jsonb, $2)`, c.plan, table)
			require.ErrorContains(t, err, c.want)
			var pg *pgconn.PgError
			require.ErrorAs(t, err, &pg)
			require.Equal(t, pgerrcode.InvalidParameterValue, pg.Code)
			require.NotEmpty(t, pg.Hint)
		})
	}
}

// A valid plan comes back normalised: version 1, every rule and override named as ACE names
// them, apply_from's mode filled in, diff_type a list; with a table, narrowed to it.
func TestValidateRepairPlanNormalises(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	n1 := e.Node("n1")
	n1.Exec(t, `CREATE TABLE public.acc (id int PRIMARY KEY, region text)`)
	plan := `{"tables": {"acc": {"rules": [{"diff_type": "missing_on_n2", "action": {"type": "apply_from", "from": "n1"}},
	          {"name": "eu", "when": "n1.region = 'eu'", "action": {"type": "keep_n2"}}],
	          "row_overrides": [{"pk": {"id": 1}, "action": {"type": "skip"}}]}, "public.other": {"default_action": {"type": "skip"}}},
	          "metadata": {"by": "test"}}`
	out, err := sqlapi.ValidateRepairPlan(context.Background(), n1.Pool, json.RawMessage(plan), "public.acc")
	require.NoError(t, err)
	require.JSONEq(t, `{"version": 1, "metadata": {"by": "test"}, "tables": {"public.acc": {
		"rules": [{"name": "rule_0", "diff_type": ["missing_on_n2"], "action": {"type": "apply_from", "from": "n1", "mode": "replace"}},
		          {"name": "eu", "when": "n1.region = 'eu'", "action": {"type": "keep_n2"}}],
		"row_overrides": [{"name": "row_override_0", "pk": {"id": 1}, "action": {"type": "skip"}}]}}}`, string(out))

	all, err := sqlapi.ValidateRepairPlan(context.Background(), n1.Pool, json.RawMessage(plan), "")
	require.NoError(t, err)
	var doc struct{ Tables map[string]any }
	require.NoError(t, json.Unmarshal(all, &doc))
	require.Len(t, doc.Tables, 2, "without a table, every table stays")
}

// Saved plans are their owner's: another role neither sees nor changes them, and a repair finds
// only the submitter's own plan by name.
func TestRepairPlansAreTheirOwners(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := testcluster.NewSecure(t)
	n1 := e.Node("n1")
	alice, bob := e.AddSubmitter("alice", false), e.AddSubmitter("bob", false)
	asAlice, asBob := n1.ConnectAs(t, alice), n1.ConnectAs(t, bob)
	plan := json.RawMessage(`{"tables": {"public.t": {"default_action": {"type": "keep_n1"}}}}`)
	stored, err := sqlapi.SaveRepairPlan(ctx, asAlice, "nightly", plan)
	require.NoError(t, err)
	require.Contains(t, string(stored), `"version": 1`)

	var n int
	require.NoError(t, asBob.QueryRow(ctx, `SELECT count(*) FROM ace.repair_plans`).Scan(&n))
	require.Zero(t, n, "bob sees none of alice's plans")
	tag, err := asBob.Exec(ctx, `UPDATE ace.repair_plans SET plan = '{}' WHERE plan_name = 'nightly'`)
	require.NoError(t, err)
	require.Zero(t, tag.RowsAffected(), "bob changes none of them")
	_, err = asBob.Exec(ctx, `INSERT INTO ace.repair_plans (owner, plan_name, plan) VALUES ($1, 'forged', '{}')`, alice)
	require.ErrorContains(t, err, "row-level security", "bob cannot store a plan as alice's")
	require.NoError(t, asAlice.QueryRow(ctx, `SELECT count(*) FROM ace.repair_plans WHERE plan_name = 'nightly'`).Scan(&n))
	require.Equal(t, 1, n)

	_, err = sqlapi.SaveRepairPlan(ctx, asAlice, "broken", json.RawMessage(`{"tables": {}}`))
	require.ErrorContains(t, err, "at least one table entry is required", "an invalid plan is not saved")

	var dropped bool
	require.NoError(t, asBob.QueryRow(ctx, `SELECT ace.drop_repair_plan('nightly')`).Scan(&dropped))
	require.False(t, dropped, "bob cannot drop alice's plan")
	require.NoError(t, asAlice.QueryRow(ctx, `SELECT ace.drop_repair_plan('nightly')`).Scan(&dropped))
	require.True(t, dropped)
}
