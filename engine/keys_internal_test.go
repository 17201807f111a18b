package engine

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// These tests cover the pure logic of keys and ranges. They need no cluster.

func TestKeyFromJSON(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		in      string
		want    []string
		wantErr bool
	}{
		{name: "text, number and boolean", in: `["a b", 1, true]`, want: []string{"a b", "1", "true"}},
		{name: "numbers keep their text", in: `[1.50, 12345678901234567890]`, want: []string{"1.50", "12345678901234567890"}},
		{name: "an empty key", in: `[]`, want: []string{}},
		{name: "null is not a key value", in: `[null]`, wantErr: true},
		{name: "an object is not a key value", in: `[{"a": 1}]`, wantErr: true},
		{name: "an object is not a key", in: `{"id": 1}`, wantErr: true},
		{name: "invalid JSON", in: `[1`, wantErr: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, err := KeyFromJSON(json.RawMessage(c.in))
			if c.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

func TestRangeString(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		r    Range
		want string
	}{
		{"open on both sides", Range{}, "[-inf, +inf)"},
		{"open above", Range{Lo: []string{"10"}}, "[(10), +inf)"},
		{"open below", Range{Hi: []string{"10"}}, "[-inf, (10))"},
		{"composite keys", Range{Lo: []string{"a", "1"}, Hi: []string{"b", "2"}}, "[(a, 1), (b, 2))"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, c.want, c.r.String())
		})
	}
}
