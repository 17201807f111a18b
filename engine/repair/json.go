package repair

import (
	"bytes"
	"encoding/json"
	"math/big"

	"github.com/ace-agent/ace-agent/engine"
)

// sameJSON reports whether two JSON documents are equal as values: objects regardless of key
// order, numbers by value (1.5 = 1.50), and an empty document equal to null.
func sameJSON(a, b json.RawMessage) bool {
	if engine.IsNullRow(a) || engine.IsNullRow(b) {
		return engine.IsNullRow(a) == engine.IsNullRow(b)
	}
	va, errA := decodeJSON(a)
	vb, errB := decodeJSON(b)
	if errA != nil || errB != nil {
		return bytes.Equal(a, b)
	}
	return sameValue(va, vb)
}

func decodeJSON(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

func sameValue(a, b any) bool {
	switch a := a.(type) {
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, va := range a {
			vb, ok := b[k]
			if !ok || !sameValue(va, vb) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !sameValue(a[i], b[i]) {
				return false
			}
		}
		return true
	case json.Number:
		b, ok := b.(json.Number)
		return ok && sameNumber(a, b)
	}
	return a == b
}

func sameNumber(a, b json.Number) bool {
	if a == b {
		return true
	}
	ra, okA := new(big.Rat).SetString(string(a))
	rb, okB := new(big.Rat).SetString(string(b))
	return okA && okB && ra.Cmp(rb) == 0
}

// rowFields decodes a row object into its columns, keeping each value's JSON as it is (numbers
// stay exact).
func rowFields(raw json.RawMessage) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if engine.IsNullRow(raw) {
		return nil, nil
	}
	err := json.Unmarshal(raw, &m)
	return m, err
}
