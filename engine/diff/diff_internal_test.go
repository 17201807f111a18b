package diff

import (
	"fmt"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
)

// These tests cover the pure logic of leaves, buckets, differing keys and pairs. They need no
// cluster.

func TestGroupLeaves(t *testing.T) {
	t.Parallel()
	k := func(vals ...string) [][]string {
		var out [][]string
		for _, v := range vals {
			out = append(out, []string{v})
		}
		return out
	}
	type want struct {
		lo, hi []string
		bounds [][]string
	}
	for _, c := range []struct {
		name           string
		bounds         [][]string
		leavesPerBlock int
		want           []want
	}{
		{name: "no bounds: one block open on both sides", leavesPerBlock: 4, want: []want{{}}},
		{
			name: "one leaf per block", bounds: k("1", "2"), leavesPerBlock: 1,
			want: []want{{hi: []string{"1"}}, {lo: []string{"1"}, hi: []string{"2"}}, {lo: []string{"2"}}},
		},
		{
			name: "two leaves per block", bounds: k("1", "2", "3", "4", "5"), leavesPerBlock: 2,
			want: []want{
				{hi: []string{"2"}, bounds: k("1")},
				{lo: []string{"2"}, hi: []string{"4"}, bounds: k("3")},
				{lo: []string{"4"}, bounds: k("5")},
			},
		},
		{
			name: "a last block with fewer leaves", bounds: k("1", "2", "3", "4"), leavesPerBlock: 3,
			want: []want{{hi: []string{"3"}, bounds: k("1", "2")}, {lo: []string{"3"}, bounds: k("4")}},
		},
		{
			name: "more leaves per block than leaves", bounds: k("1", "2"), leavesPerBlock: 10,
			want: []want{{bounds: k("1", "2")}},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			blocks := groupLeaves(c.bounds, c.leavesPerBlock)
			got := []want{}
			for _, b := range blocks {
				w := want{lo: b.rng.Lo, hi: b.rng.Hi}
				if len(b.bounds) > 0 {
					w.bounds = b.bounds
				}
				got = append(got, w)
			}
			require.Equal(t, c.want, got)

			// The leaves of the blocks, in order, tile the key space: len(bounds)+1 leaves, each
			// starting where the previous one ended, the first open below and the last open above.
			var leaves []engine.Range
			for _, b := range blocks {
				for i := 0; i <= len(b.bounds); i++ {
					leaves = append(leaves, b.leafRange(i))
				}
			}
			require.Len(t, leaves, len(c.bounds)+1)
			require.Nil(t, leaves[0].Lo)
			require.Nil(t, leaves[len(leaves)-1].Hi)
			for i := 1; i < len(leaves); i++ {
				require.Equal(t, c.bounds[i-1], leaves[i].Lo, "leaf %d starts at bound %d", i, i-1)
				require.Equal(t, c.bounds[i-1], leaves[i-1].Hi, "leaf %d ends at bound %d", i-1, i-1)
			}
		})
	}
}

func TestMismatchedBuckets(t *testing.T) {
	t.Parallel()
	h := func(count int64, lane string) bucketHash { return bucketHash{count: count, lane1: lane, lane2: lane} }
	for _, c := range []struct {
		name   string
		hashes []map[int]bucketHash
		n      int
		want   map[int][]int64
	}{
		{
			name:   "identical buckets",
			hashes: []map[int]bucketHash{{0: h(2, "5"), 1: h(1, "7")}, {0: h(2, "5"), 1: h(1, "7")}},
			n:      1, want: map[int][]int64{},
		},
		{
			name:   "a lane differs",
			hashes: []map[int]bucketHash{{0: h(2, "5"), 1: h(1, "7")}, {0: h(2, "5"), 1: h(1, "8")}, {0: h(2, "5"), 1: h(1, "7")}},
			n:      1, want: map[int][]int64{1: {1, 1, 1}},
		},
		{
			name:   "only the second lane differs",
			hashes: []map[int]bucketHash{{0: {count: 1, lane1: "1", lane2: "2"}}, {0: {count: 1, lane1: "1", lane2: "3"}}},
			n:      0, want: map[int][]int64{0: {1, 1}},
		},
		{
			name:   "a bucket empty on one node",
			hashes: []map[int]bucketHash{{0: h(2, "5"), 2: h(3, "9")}, {0: h(2, "5")}},
			n:      2, want: map[int][]int64{2: {3, 0}},
		},
		{
			name:   "buckets past n are not looked at",
			hashes: []map[int]bucketHash{{0: h(2, "5"), 3: h(3, "9")}, {0: h(2, "5")}},
			n:      2, want: map[int][]int64{},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, c.want, mismatchedBuckets(c.hashes, c.n))
		})
	}
}

func TestDifferingKeys(t *testing.T) {
	t.Parallel()
	kh := func(key, hash string) keyHash { return keyHash{key: []string{key}, hash: hash} }
	perNode := []map[string]keyHash{
		{"1": kh("1", "a"), "2": kh("2", "b"), "3": kh("3", "c")},
		{"1": kh("1", "a"), "2": kh("2", "B"), "4": kh("4", "d")},
		{"1": kh("1", "a"), "2": kh("2", "b"), "3": kh("3", "c")},
	}
	got := differingKeys(perNode)
	sort.Slice(got, func(i, j int) bool { return engine.KeyString(got[i].key) < engine.KeyString(got[j].key) })
	require.Equal(t, []keyDiff{
		{key: []string{"2"}, present: []bool{true, true, true}, hashes: []string{"b", "B", "b"}},
		{key: []string{"3"}, present: []bool{true, false, true}, hashes: []string{"c", "", "c"}},
		{key: []string{"4"}, present: []bool{false, true, false}, hashes: []string{"", "d", ""}},
	}, got, "key 1 is the same everywhere")

	for _, c := range []struct {
		name string
		kd   keyDiff
		i, j int
		want bool
	}{
		{"same hash on both", got[0], 0, 2, false},
		{"different hashes", got[0], 0, 1, true},
		{"present on one only", got[1], 0, 1, true},
		{"present on one only, the other way", got[1], 1, 2, true},
		{"absent on both", got[2], 0, 2, false},
		{"present with the same hash", got[1], 0, 2, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, c.want, c.kd.differs(c.i, c.j))
			require.Equal(t, c.want, c.kd.differs(c.j, c.i), "symmetric")
		})
	}
}

func TestPairKey(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ a, b, want string }{
		{"n1", "n2", "n1/n2"},
		{"n2", "n1", "n1/n2"},
		{"b", "a10", "a10/b"},
		{"n1", "n1", "n1/n1"},
	} {
		t.Run(c.a+"_"+c.b, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, c.want, pairKey(c.a, c.b))
		})
	}
}

// A part of a block holds the block's leaves from first on, each the same range, and an integer
// block's part puts each key in the same leaf by arithmetic.
func TestBlockPartKeepsItsLeaves(t *testing.T) {
	t.Parallel()
	bounds := [][]string{{"11"}, {"21"}, {"31"}, {"41"}, {"51"}}
	for _, c := range []struct {
		name string
		b    block
	}{
		{"open block of bounds", block{bounds: bounds}},
		{"closed block of bounds", block{rng: engine.Range{Lo: []string{"1"}, Hi: []string{"61"}}, bounds: bounds}},
		{"integer block", block{rng: engine.Range{Lo: []string{"1"}}, bounds: bounds, step: &engine.IntStep{Lo: 1, W: 10}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for first := 0; first <= len(bounds); first++ {
				for last := first + 1; last <= len(bounds)+1; last++ {
					p := c.b.part(first, last)
					require.Len(t, p.bounds, last-first-1)
					for j := first; j < last; j++ {
						require.Equal(t, c.b.leafRange(j), p.leafRange(j-first), "leaf %d of part [%d, %d)", j, first, last)
					}
					if c.b.step != nil && last-first > 1 {
						// Leaf 1 of the part starts at its first bound, lo + w.
						require.Equal(t, p.bounds[0][0], fmt.Sprint(p.step.Lo+p.step.W))
					}
				}
			}
		})
	}
}

// Lanes of disjoint rows add up exactly, however large; a leaf absent from one part is the other's.
func TestAddLanes(t *testing.T) {
	t.Parallel()
	a := bucketHash{count: 2, lane1: "-9223372036854775808", lane2: "5"}
	b := bucketHash{count: 3, lane1: "-9223372036854775808", lane2: "-7"}
	require.Equal(t, bucketHash{count: 5, lane1: "-18446744073709551616", lane2: "-2"}, addLanes(a, b))
	require.Equal(t, b, addLanes(bucketHash{}, b))
	require.Equal(t, "0", addDecimal("12", "-12"))
}
