package sqlapi_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/robfig/cron/v3"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// cronCase is one generated expression and the time after which its next run is asked for.
type cronCase struct {
	expr  string
	after time.Time
	zone  string
}

// cronGen makes random five-field expressions of every shape the oracle reads as Vixie cron
// does: lists, ranges, steps, names. Left out: 7 for Sunday (robfig knows 0-6 only), and day
// fields that Vixie cron and robfig read differently as restricted or not, such as */2 (Vixie
// cron: unrestricted, as it starts with '*') beside a restricted other day field
// (TestCronNextVixieRules covers them).
type cronGen struct{ r *rand.Rand }

var (
	monthNames = []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
	dayNames   = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
)

func (g cronGen) value(lo, hi int, names []string) string {
	v := lo + g.r.IntN(hi-lo+1)
	if names != nil && g.r.IntN(3) == 0 {
		name := names[v-lo]
		if g.r.IntN(2) == 0 {
			name = strings.ToUpper(name)
		}
		return name
	}
	return fmt.Sprint(v)
}

func (g cronGen) item(lo, hi int, names []string) string {
	switch g.r.IntN(5) {
	case 0:
		return g.value(lo, hi, names)
	case 1:
		a := lo + g.r.IntN(hi-lo+1)
		b := a + g.r.IntN(hi-a+1)
		return fmt.Sprintf("%d-%d", a, b)
	case 2:
		a := lo + g.r.IntN(hi-lo+1)
		b := a + g.r.IntN(hi-a+1)
		return fmt.Sprintf("%d-%d/%d", a, b, 1+g.r.IntN(max(1, (hi-lo)/2)))
	case 3:
		return fmt.Sprintf("%d/%d", lo+g.r.IntN(hi-lo+1), 1+g.r.IntN(max(1, (hi-lo)/2)))
	default:
		return fmt.Sprintf("*/%d", 1+g.r.IntN(max(1, (hi-lo)/2)))
	}
}

func (g cronGen) field(lo, hi int, names []string) string {
	switch n := g.r.IntN(10); {
	case n < 4:
		return "*"
	case n < 8:
		return g.item(lo, hi, names)
	default:
		items := make([]string, 2+g.r.IntN(2))
		for i := range items {
			items[i] = g.item(lo, hi, names)
		}
		return strings.Join(items, ",")
	}
}

func (g cronGen) expr() string {
	for {
		dom, dow := g.field(1, 31, nil), g.field(0, 6, dayNames)
		// Vixie cron ANDs the day fields when either starts with '*'; robfig when either has an
		// item * or */1. Where the two readings differ, the expression is left out.
		vixie := func(f string) bool { return strings.HasPrefix(f, "*") }
		robfig := func(f string) bool {
			return slices.ContainsFunc(strings.Split(f, ","), func(i string) bool { return i == "*" || i == "*/1" })
		}
		if (vixie(dom) || vixie(dow)) != (robfig(dom) || robfig(dow)) {
			continue
		}
		expr := strings.Join([]string{g.field(0, 59, nil), g.field(0, 23, nil), dom, g.field(1, 12, monthNames), dow}, " ")
		// A day of the month that none of the months has never comes: ace.cron_next refuses it.
		if s, err := cron.ParseStandard(expr); err == nil && s.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
			continue
		}
		return expr
	}
}

// cronNext asks ace.cron_next for every case in one query.
func cronNext(t *testing.T, e *testcluster.Env, cases []cronCase) []*time.Time {
	t.Helper()
	exprs, afters, zones := make([]string, len(cases)), make([]time.Time, len(cases)), make([]string, len(cases))
	for i, c := range cases {
		exprs[i], afters[i], zones[i] = c.expr, c.after, c.zone
	}
	rows, err := e.Node("n1").Pool.Query(context.Background(), `SELECT ace.cron_next(x.e, x.a, x.z)
		FROM unnest($1::text[], $2::timestamptz[], $3::text[]) WITH ORDINALITY AS x(e, a, z, i) ORDER BY x.i`, exprs, afters, zones)
	require.NoError(t, err)
	var out []*time.Time
	for rows.Next() {
		var next *time.Time
		require.NoError(t, rows.Scan(&next))
		out = append(out, next)
	}
	require.NoError(t, rows.Err())
	require.Len(t, out, len(cases))
	return out
}

// noClockChange reports whether the zone keeps one offset from three hours before from until
// three hours after to: there Vixie cron's daylight-saving rules (which ace.cron_next follows)
// and robfig's (which differ) do not apply.
func noClockChange(from, to time.Time, loc *time.Location) bool {
	_, end := from.Add(-3 * time.Hour).In(loc).ZoneBounds()
	return end.IsZero() || end.After(to.Add(3*time.Hour))
}

// TestCronNextAgreesWithRobfigCron: ace.cron_next, the one definition of cron in ace-agent,
// finds the same next time as github.com/robfig/cron/v3 for thousands of generated expressions
// and times, in UTC and in zones with daylight saving (away from the changes, where Vixie cron's
// rules and robfig's differ by design; TestCronNextAroundDaylightSaving covers them).
func TestCronNextAgreesWithRobfigCron(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	g := cronGen{rand.New(rand.NewPCG(19, 2026))}
	zones := []string{"UTC", "UTC", "America/New_York", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kolkata"}
	start := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	span := int64(time.Date(2090, 1, 1, 0, 0, 0, 0, time.UTC).Sub(start) / time.Second)
	var cases []cronCase
	for range 3000 {
		after := start.Add(time.Duration(g.r.Int64N(span))*time.Second + time.Duration(g.r.IntN(1000))*time.Millisecond)
		if g.r.IntN(4) == 0 {
			after = after.Truncate(time.Minute) // exactly on a minute: the next run is strictly after
		}
		cases = append(cases, cronCase{expr: g.expr(), after: after, zone: zones[g.r.IntN(len(zones))]})
	}
	got := cronNext(t, e, cases)
	compared, zoned := 0, 0
	for i, c := range cases {
		loc, err := time.LoadLocation(c.zone)
		require.NoError(t, err)
		sched, err := cron.ParseStandard(c.expr)
		require.NoError(t, err, "the oracle reads %q", c.expr)
		want := sched.(*cron.SpecSchedule)
		want.Location = loc
		next := want.Next(c.after)
		if next.IsZero() {
			continue // beyond the oracle's five years
		}
		require.NotNil(t, got[i], "case %d: %q after %s in %s", i, c.expr, c.after, c.zone)
		if c.zone != "UTC" && !noClockChange(c.after, later(next, *got[i]), loc) {
			continue
		}
		require.Truef(t, next.Equal(*got[i]), "case %d: %q after %s in %s: robfig says %s, ace.cron_next %s",
			i, c.expr, c.after.In(loc), c.zone, next.In(loc), got[i].In(loc))
		compared++
		if c.zone != "UTC" {
			zoned++
		}
	}
	t.Logf("%d of %d cases compared with the oracle (%d in zones with daylight saving)", compared, len(cases), zoned)
	// Zoned cases whose next time lies past a clock change are left out; most still count.
	require.Greater(t, compared, len(cases)*3/4)
	require.Greater(t, zoned, len(cases)/3)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// TestCronNextVixieRules: the rules of Vixie cron that the oracle does not share, and the day
// fields' OR.
func TestCronNextVixieRules(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		require.NoError(t, err)
		return v
	}
	cases := []struct {
		name, expr, after, want string
	}{
		// 2026-06-01 is a Monday.
		{"both day fields restricted: either matches", "0 0 15 * mon", "2026-06-01T00:00:00Z", "2026-06-08T00:00:00Z"},
		{"both day fields restricted: the day of the month", "0 0 3 * sun", "2026-06-01T00:00:00Z", "2026-06-03T00:00:00Z"},
		{"a day field stepped from * is unrestricted: both must match", "0 0 */2 * mon", "2026-06-01T00:00:00Z", "2026-06-15T00:00:00Z"},
		{"7 is Sunday", "0 12 * * 7", "2026-06-01T00:00:00Z", "2026-06-07T12:00:00Z"},
		{"names in ranges", "0 0 1 feb-mar *", "2026-06-01T00:00:00Z", "2027-02-01T00:00:00Z"},
		{"a step from a single value", "50/5 * * * *", "2026-06-01T10:56:00Z", "2026-06-01T11:50:00Z"},
		{"@daily", "@daily", "2026-06-01T10:00:00Z", "2026-06-02T00:00:00Z"},
		{"the 29th of February", "0 0 29 2 *", "2026-06-01T00:00:00Z", "2028-02-29T00:00:00Z"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := cronNext(t, e, []cronCase{{expr: c.expr, after: at(c.after), zone: "UTC"}})
			require.NotNil(t, got[0])
			require.Equal(t, at(c.want).UTC(), got[0].UTC())
		})
	}
}

// TestCronNextAroundDaylightSaving: as Vixie cron runs jobs when clocks change. New York went
// forward at 02:00 EST on 2026-03-08 (to 03:00 EDT) and back at 02:00 EDT on 2026-11-01 (to
// 01:00 EST).
func TestCronNextAroundDaylightSaving(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	local := func(y int, m time.Month, d, h, min int, edt bool) time.Time {
		offset := -5
		if edt {
			offset = -4
		}
		return time.Date(y, m, d, h, min, 0, 0, time.FixedZone("", offset*3600))
	}
	cases := []struct {
		name       string
		expr       string
		after      time.Time
		want       time.Time
		wantOffset int // hours from UTC of the wanted time in New York
	}{
		{"a fixed-time job in the skipped hour runs at the change", "30 2 * * *",
			local(2026, 3, 8, 0, 0, false), local(2026, 3, 8, 3, 0, true), -4},
		{"and then on the next day as usual", "30 2 * * *",
			local(2026, 3, 8, 3, 0, true), local(2026, 3, 9, 2, 30, true), -4},
		{"a wildcard job skips the missing times", "30 * * * *",
			local(2026, 3, 8, 1, 45, false), local(2026, 3, 8, 3, 30, true), -4},
		{"a fixed-time job in the repeated hour runs in its first pass", "30 1 * * *",
			local(2026, 11, 1, 0, 0, true), local(2026, 11, 1, 1, 30, true), -4},
		{"and not again in the second", "30 1 * * *",
			local(2026, 11, 1, 1, 30, true), local(2026, 11, 2, 1, 30, false), -5},
		{"a wildcard job runs in both passes", "30 * * * *",
			local(2026, 11, 1, 1, 30, true), local(2026, 11, 1, 1, 30, false), -5},
		{"from the end of the first pass back to the start of the second", "*/15 1 * * *",
			local(2026, 11, 1, 1, 45, true), local(2026, 11, 1, 1, 0, false), -5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := cronNext(t, e, []cronCase{{expr: c.expr, after: c.after, zone: "America/New_York"}})
			require.NotNil(t, got[0])
			require.Equal(t, c.want.UTC(), got[0].UTC(), "got %s", got[0].In(ny))
			_, offset := got[0].In(ny).Zone()
			require.Equal(t, c.wantOffset*3600, offset)
		})
	}
}

// TestCronNextRefusesInvalidFields: each field's error names the field; the zone comes from
// schedule_timezone unless given.
func TestCronNextRefusesInvalidFields(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	n1 := e.Node("n1")
	cases := []struct{ name, expr, msg string }{
		{"minute out of range", "60 * * * *", `invalid minute field "60"`},
		{"hour out of range", "0 24 * * *", `invalid hour field "24"`},
		{"day of month zero", "0 0 0 * *", `invalid day-of-month field "0"`},
		{"unknown month name", "0 0 1 foo *", `invalid month field "foo"`},
		{"day of week 8", "0 0 * * 8", `invalid day-of-week field "8"`},
		{"a step of zero", "*/0 * * * *", `invalid minute field "*/0"`},
		{"a range backwards", "0 5-2 * * *", `range "5-2" runs backwards`},
		{"an empty list item", "1,,2 * * * *", `invalid minute field "1,,2"`},
		{"four fields", "0 0 * *", `has 4 field(s), not 5`},
		{"a day no month has", "0 0 30 2 *", `never matches`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := n1.Pool.Exec(context.Background(), `SELECT ace.cron_next($1)`, c.expr)
			var pgErr *pgconn.PgError
			require.ErrorAs(t, err, &pgErr)
			require.Equal(t, pgerrcode.InvalidParameterValue, pgErr.Code)
			require.Contains(t, pgErr.Message, c.msg)
			require.NotEmpty(t, pgErr.Hint)
		})
	}
	t.Run("the zone of schedule_timezone", func(t *testing.T) {
		n1.Exec(t, `UPDATE ace.settings SET value = 'Asia/Tokyo' WHERE name = 'schedule_timezone'`)
		var next time.Time
		require.NoError(t, n1.Pool.QueryRow(context.Background(),
			`SELECT ace.cron_next('0 9 * * *', '2026-05-31T12:00:00Z')`).Scan(&next))
		require.Equal(t, time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), next.UTC(), "09:00 in Tokyo is 00:00 UTC")
	})
	t.Run("an unknown zone", func(t *testing.T) {
		_, err := n1.Pool.Exec(context.Background(), `SELECT ace.cron_next('* * * * *', now(), 'Mars/Olympus')`)
		require.ErrorContains(t, err, `unknown time zone "Mars/Olympus"`)
	})
}
