package sqlapi

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// The verdict of a key: the version a strict majority holds wins (absence is a version); the
// others differ; with no majority every node of the key differs and is diverged.
func TestVerdictTally(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		keys []map[string]int
		want verdictTally
	}{
		{"one node changed", []map[string]int{{"n1": 1, "n2": 2, "n3": 1}},
			verdictTally{"n2": {Differing: 1}}},
		{"one node lacks the row", []map[string]int{{"n1": 1, "n2": 1, "n3": absent}},
			verdictTally{"n3": {Differing: 1}}},
		{"a row only one node has", []map[string]int{{"n1": absent, "n2": 1, "n3": absent}},
			verdictTally{"n2": {Differing: 1}}},
		{"two nodes", []map[string]int{{"n1": 1, "n2": 2}},
			verdictTally{"n1": {Differing: 1, Diverged: true}, "n2": {Differing: 1, Diverged: true}}},
		{"three versions", []map[string]int{{"n1": 1, "n2": 2, "n3": 3}},
			verdictTally{"n1": {Differing: 1, Diverged: true}, "n2": {Differing: 1, Diverged: true}, "n3": {Differing: 1, Diverged: true}}},
		{"half is no majority", []map[string]int{{"n1": 1, "n2": 1, "n3": 2, "n4": 2}},
			verdictTally{"n1": {Differing: 1, Diverged: true}, "n2": {Differing: 1, Diverged: true}, "n3": {Differing: 1, Diverged: true}, "n4": {Differing: 1, Diverged: true}}},
		{"keys add up, diverged outweighs", []map[string]int{{"n1": 1, "n2": 1, "n3": 2}, {"n1": 1, "n2": 2, "n3": 3}, {"n1": 1, "n2": 1, "n3": absent}},
			verdictTally{"n1": {Differing: 1, Diverged: true}, "n2": {Differing: 1, Diverged: true}, "n3": {Differing: 3, Diverged: true}}},
		{"every node agrees", []map[string]int{{"n1": 1, "n2": 1, "n3": 1}}, verdictTally{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := verdictTally{}
			for _, k := range c.keys {
				got.add(k)
			}
			require.Equal(t, c.want, got)
		})
	}
}
