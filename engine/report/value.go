package report

import (
	"encoding/json"
	"regexp"
	"time"
)

// valueConverter turns a value as stored in ace.diff_results (JSON numbers and booleans, else
// PostgreSQL's text form as a JSON string) into the value ACE writes in its diff files.
type valueConverter func(json.RawMessage) json.RawMessage

// converters picks a converter for each column type (format_type names). ACE writes dates and
// timestamps as RFC 3339 in UTC; everything else is kept as it is.
func converters(types []string) []valueConverter {
	out := make([]valueConverter, len(types))
	for i, t := range types {
		out[i] = converterFor(t)
	}
	return out
}

// typmod matches a precision such as the (3) of timestamp(3) with time zone.
var typmod = regexp.MustCompile(`\(\d+\)`)

// Layouts of PostgreSQL's ISO output (DateStyle ISO); fractional seconds are accepted after
// the seconds even though the layouts do not show them.
var (
	timestamptzLayouts = []string{"2006-01-02 15:04:05Z07", "2006-01-02 15:04:05Z07:00", "2006-01-02 15:04:05Z07:00:00"}
	timestampLayouts   = []string{"2006-01-02 15:04:05"}
	dateLayouts        = []string{"2006-01-02"}
)

func converterFor(colType string) valueConverter {
	var layouts []string
	switch typmod.ReplaceAllString(colType, "") {
	case "timestamp with time zone":
		layouts = timestamptzLayouts
	case "timestamp without time zone", "timestamp":
		layouts = timestampLayouts
	case "date":
		layouts = dateLayouts
	default:
		return func(v json.RawMessage) json.RawMessage { return v }
	}
	return func(v json.RawMessage) json.RawMessage { return convertTime(v, layouts) }
}

// convertTime rewrites a PostgreSQL date or timestamp as RFC 3339 in UTC with as many fractional
// digits as needed (2024-01-02T03:04:05.123456Z). infinity, -infinity and anything it cannot
// parse (BC dates, years past 9999) are kept as they are.
func convertTime(v json.RawMessage, layouts []string) json.RawMessage {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return v
	}
	for _, layout := range layouts {
		t, err := time.Parse(layout, s)
		if err != nil {
			continue
		}
		out, err := json.Marshal(t.UTC().Format(time.RFC3339Nano))
		if err != nil {
			return v
		}
		return out
	}
	return v
}
