package main

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/sqlapi"
)

func TestFormatProgress(t *testing.T) {
	t.Parallel()
	require.Equal(t, "hashing [###-------] 12/40 blocks, 1,234,567 rows hashed, 3 differing",
		formatProgress(engine.Progress{Phase: "hashing", BlocksTotal: 40, BlocksDone: 12, RowsHashed: 1234567, DifferingKeys: 3}))
	require.Equal(t, "checking table", formatProgress(engine.Progress{Phase: "checking table"}))
	require.Equal(t, "running [##########] 5/5 blocks, 10 rows hashed", formatProgress(engine.Progress{BlocksTotal: 5, BlocksDone: 5, RowsHashed: 10}))
	require.Equal(t, "queued, waiting for an agent", progressLine(sqlapi.Task{Status: sqlapi.StatusQueued}))
	require.Equal(t, "", progressLine(sqlapi.Task{Status: sqlapi.StatusCompleted}))
}

func TestGroupDigits(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234"} {
		require.Equal(t, want, groupDigits(n))
	}
}

func TestConvertTime(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ typ, in, want string }{
		{"timestamp with time zone", `"2024-01-02 03:04:05.123456+00"`, `"2024-01-02T03:04:05.123456Z"`},
		{"timestamp with time zone", `"2024-01-02 03:04:05+05:30"`, `"2024-01-01T21:34:05Z"`},
		{"timestamp(3) with time zone", `"2024-01-02 03:04:05.1-03"`, `"2024-01-02T06:04:05.1Z"`},
		{"timestamp without time zone", `"2024-01-02 03:04:05"`, `"2024-01-02T03:04:05Z"`},
		{"date", `"2024-01-02"`, `"2024-01-02T00:00:00Z"`},
		{"date", `"infinity"`, `"infinity"`},
		{"timestamp with time zone", `"-infinity"`, `"-infinity"`},
		{"date", `"0044-03-15 BC"`, `"0044-03-15 BC"`},
		{"date", `null`, `null`},
		{"text", `"2024-01-02"`, `"2024-01-02"`},
		{"numeric(12,2)", `"3000.00"`, `"3000.00"`},
		{"bigint", `9007199254740993`, `9007199254740993`},
	} {
		require.Equal(t, c.want, string(converterFor(c.typ)(json.RawMessage(c.in))), "%s %s", c.typ, c.in)
	}
}

func TestProgressPrinter(t *testing.T) {
	t.Parallel()
	running := func(done int) sqlapi.Task {
		raw, _ := json.Marshal(engine.Progress{Phase: "hashing", BlocksTotal: 4, BlocksDone: done})
		return sqlapi.Task{Status: sqlapi.StatusRunning, Progress: raw}
	}
	var tty bytes.Buffer
	p := &progressPrinter{w: &tty, tty: true, throttle: time.Second}
	p.update(sqlapi.Task{Status: sqlapi.StatusQueued})
	p.update(running(1))
	p.update(running(1))
	p.update(running(2))
	p.finish()
	require.Equal(t, "\rqueued, waiting for an agent\x1b[K\rhashing [##--------] 1/4 blocks\x1b[K"+
		"\rhashing [#####-----] 2/4 blocks\x1b[K\r\x1b[K", tty.String())

	var plain bytes.Buffer
	p = &progressPrinter{w: &plain, throttle: time.Hour}
	p.update(running(1))
	p.update(running(2)) // within the throttle: dropped
	p.finish()
	require.Equal(t, "hashing [##--------] 1/4 blocks\n", plain.String())
}

func TestClusterNodes(t *testing.T) {
	t.Parallel()
	f := serviceFile{
		"c":    {"dbname": "app", "password": "x", "port": "5433"},
		"c.n2": {"host": "h2", "hostaddr": "10.0.0.2", "password": "y"},
		"c.n1": {"hostaddr": "10.0.0.1", "port": "5434", "sslmode": "verify-full", "sslrootcert": "/etc/ca certs/ca.pem"},
		"d.n1": {"host": "other"},
	}
	nodes, warnings, err := clusterNodes(f, "c", "")
	require.NoError(t, err)
	require.Equal(t, []serviceNode{
		{Name: "n1", Section: "c.n1", ConnInfo: "host=10.0.0.1 port=5434 dbname=app sslmode=verify-full sslrootcert='/etc/ca certs/ca.pem'"},
		{Name: "n2", Section: "c.n2", ConnInfo: "host=h2 port=5433 dbname=app"},
	}, nodes)
	require.Len(t, warnings, 3, "%q", warnings)
	require.Contains(t, warnings[0], "[c] has a password")
	require.Contains(t, warnings[1], "[c.n2]: ignoring hostaddr")
	require.Contains(t, warnings[2], "[c.n2] has a password")

	nodes, _, err = clusterNodes(f, "c", "other db")
	require.NoError(t, err)
	require.Equal(t, "host=h2 port=5433 dbname='other db'", nodes[1].ConnInfo)
}

func TestPairDiffersAndMeta(t *testing.T) {
	t.Parallel()
	// n1 and n3 hold the same version, n2 another, n4 none.
	r := engine.DiffRow{Versions: map[string]int{"n1": 1, "n2": 2, "n3": 1}}
	for pair, want := range map[[2]string]bool{
		{"n1", "n2"}: true, {"n1", "n3"}: false, {"n2", "n3"}: true, {"n1", "n4"}: true, {"n4", "n5"}: false,
	} {
		require.Equal(t, want, pairDiffers(r, pair), "%v", pair)
	}
	require.Equal(t, [][2]string{{"a", "b"}, {"a", "c"}, {"b", "c"}}, nodePairs([]string{"c", "a", "b"}))

	raw, err := json.Marshal(aceMetaOf(nil, "n1"))
	require.NoError(t, err)
	require.Equal(t, `{"commit_ts":null,"node_origin":null}`, string(raw))
	ts := time.Date(2024, 1, 2, 3, 4, 5, 120000000, time.FixedZone("x", 3600))
	origin := "n2"
	raw, err = json.Marshal(aceMetaOf(map[string]engine.RowMeta{"n1": {CommitTS: &ts, NodeOrigin: &origin}}, "n1"))
	require.NoError(t, err)
	require.Equal(t, `{"commit_ts":"2024-01-02T02:04:05.12Z","node_origin":"n2"}`, string(raw))
}
