// Package orderedjson reads JSON objects with their keys in the order they were written, for
// tests that check a format's key order (ACE's diff file lists columns in table order).
package orderedjson

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

// Object is a JSON object with its keys in written order.
type Object struct {
	Keys   []string
	Values map[string]json.RawMessage
}

// Decode reads raw, which must be a JSON object.
func Decode(t testing.TB, raw []byte) Object {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	tok, err := dec.Token()
	require.NoError(t, err)
	require.Equal(t, json.Delim('{'), tok, "not an object: %s", raw)
	o := Object{Values: map[string]json.RawMessage{}}
	for dec.More() {
		tok, err := dec.Token()
		require.NoError(t, err)
		key := tok.(string)
		var v json.RawMessage
		require.NoError(t, dec.Decode(&v))
		o.Keys = append(o.Keys, key)
		o.Values[key] = v
	}
	return o
}

// Object returns the object under key.
func (o Object) Object(t testing.TB, key string) Object {
	t.Helper()
	require.Contains(t, o.Values, key)
	return Decode(t, o.Values[key])
}

// List returns the list of objects under key.
func (o Object) List(t testing.TB, key string) []Object {
	t.Helper()
	var raws []json.RawMessage
	require.NoError(t, json.Unmarshal(o.Values[key], &raws), "%s is not a list", key)
	out := make([]Object, len(raws))
	for i, r := range raws {
		out[i] = Decode(t, r)
	}
	return out
}

// Value returns the value under key, decoded into Go values.
func (o Object) Value(t testing.TB, key string) any {
	t.Helper()
	var v any
	require.NoError(t, json.Unmarshal(o.Values[key], &v))
	return v
}
