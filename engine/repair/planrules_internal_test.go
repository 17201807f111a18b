package repair

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// How a plan's side names become nodes: positions in a diff of two nodes, names always, and a
// refusal naming the fix wherever a position is undefined or ambiguous.
func TestPlanSidesBindToNodes(t *testing.T) {
	t.Parallel()
	plan := func(doc string) *Plan {
		p, err := ParsePlan(json.RawMessage(`{"version": 1, "tables": {"public.t": `+doc+`}}`), "")
		require.NoError(t, err)
		return p
	}
	t.Run("positions in a diff of two nodes", func(t *testing.T) {
		t.Parallel()
		b, err := plan(`{"default_action": {"type": "keep_n2"},
			"rules": [{"name": "r", "diff_type": ["missing_on_n1"], "action": {"type": "custom",
				"custom_row": {"note": "from {{n2.v}}", "v": "{{n1.v}}"},
				"helpers": {"coalesce_priority": ["n2", "n1"], "pick_freshest": {"key": "v", "tie": "n1"}}}}]}`).bind([]string{"beta", "alpha"})
		require.NoError(t, err)
		require.Equal(t, PlanAction{Type: planKeep, Node: "beta"}, *b.TableDefault)
		r := b.Rules[0]
		require.Equal(t, []string{"missing_on_alpha"}, r.DiffTypes)
		require.Equal(t, []string{"beta", "alpha"}, r.Action.Helpers.CoalescePriority)
		require.Equal(t, "alpha", r.Action.Helpers.PickFreshest.Tie)
		require.JSONEq(t, `"from {{beta.v}}"`, string(r.Action.CustomRow["note"]))
		require.JSONEq(t, `"{{alpha.v}}"`, string(r.Action.CustomRow["v"]))
		require.Equal(t, map[string]string{"alpha": "alpha", "beta": "beta", "n1": "alpha", "n2": "beta"},
			sideNames{nodes: []string{"alpha", "beta"}}.whenAliases())
	})
	t.Run("names in any diff", func(t *testing.T) {
		t.Parallel()
		b, err := plan(`{"default_action": {"type": "apply_from", "from": "n3", "mode": "upsert"}}`).bind([]string{"n1", "n2", "n3"})
		require.NoError(t, err)
		require.Equal(t, "n3", b.TableDefault.From)
	})
	for _, c := range []struct{ name, doc, want string }{
		{"keep_n1 with three nodes", `{"default_action": {"type": "keep_n1"}}`,
			`table.default_action: keep_n1 keeps a position (ACE's n1/n2: the first or second node of a pair), and in a diff of 3 nodes (a, b, c) the node it means is not defined: name the node instead ({"type": "keep", "node": "c"})`},
		{"from n1 with three nodes", `{"default_action": {"type": "apply_from", "from": "n1"}}`,
			`table.default_action apply_from: n1 is a position (ACE's n1/n2: the first or second node of a pair), and in a diff of 3 nodes (a, b, c) the node it means is not defined: name the node instead ("from": "c")`},
		{"when reads a position", `{"rules": [{"name": "w", "when": "n2.v = 'n1.v'", "action": {"type": "skip"}}]}`,
			`rule (w) when: n2 is a position`},
		{"tie names no node", `{"default_action": {"type": "custom", "helpers": {"pick_freshest": {"key": "v", "tie": "z"}}}}`,
			`table.default_action pick_freshest.tie: z is not one of the diff's nodes (a, b, c)`},
		{"template reads a position", `{"default_action": {"type": "custom", "custom_row": {"v": "{{n1.v}}"}}}`,
			`custom_row.v: n1 is a position`},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := plan(c.doc).bind([]string{"c", "a", "b"})
			require.ErrorContains(t, err, c.want)
		})
	}
	t.Run("a name at the other position is ambiguous", func(t *testing.T) {
		t.Parallel()
		_, err := plan(`{"default_action": {"type": "keep", "node": "n2"}}`).bind([]string{"n2", "n3"})
		require.ErrorContains(t, err, "n2 is both a node's name and, as ACE reads it, the position of node n3 in this diff of n2 and n3")
		_, err = plan(`{"default_action": {"type": "keep", "node": "n3"}}`).bind([]string{"n2", "n3"})
		require.NoError(t, err)
	})
}
