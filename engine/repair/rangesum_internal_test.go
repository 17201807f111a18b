package repair

import (
	"bytes"
	"math"
	"math/big"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestInt128SumsLikeBigIntegers(t *testing.T) {
	t.Parallel()
	for name, values := range map[string][]int64{
		"positive overflow of 64 bits": {math.MaxInt64, math.MaxInt64, 5},
		"negative overflow of 64 bits": {math.MinInt64, math.MinInt64, -1},
		"mixed signs":                  {math.MinInt64, math.MaxInt64, -7, 3, math.MaxInt64},
		"none":                         {},
	} {
		t.Run(name, func(t *testing.T) {
			var x int128
			want := new(big.Int)
			for _, v := range values {
				x.add(v)
				want.Add(want, big.NewInt(v))
			}
			require.Equal(t, want.String(), x.String())
		})
	}
}

func TestRangeSumTakesTheDigestOff(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	s := newRangeSum(&out)
	digest := "ffffffffffffffff" + "0000000000000002" + "00000000000000000000000000000000"
	// Cut anywhere, with an escaped tab inside a value.
	in := "1\ta\\tb\t" + digest + "\n2\t\\N\t" + digest + "\n"
	for _, part := range []string{in[:5], in[5:40], in[40:]} {
		_, err := s.Write([]byte(part))
		require.NoError(t, err)
	}
	require.NoError(t, s.flush())
	require.Equal(t, "1\ta\\tb\n2\t\\N\n", out.String())
	rows, l1, l2 := s.result()
	require.EqualValues(t, 2, rows)
	require.Equal(t, "-2", l1)
	require.Equal(t, "4", l2)
}
