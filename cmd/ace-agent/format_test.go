package main

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/report"
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
	for _, c := range []struct {
		n    int64
		want string
	}{
		{0, "0"}, {999, "999"}, {1000, "1,000"}, {1234567, "1,234,567"}, {-1234, "-1,234"},
	} {
		t.Run(c.want, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, c.want, report.GroupDigits(c.n))
		})
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
