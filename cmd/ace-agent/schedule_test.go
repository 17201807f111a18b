package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// TestScheduleCommands: add, list, pause, resume, run and remove, with their exit codes.
func TestScheduleCommands(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 10)
	n1 := e.Node("n1")

	r := ace(t, n1.DSN, "schedule", "add", "hourly", "table-diff", "--args", `{"table_name": "public.t"}`, "--every", "1 hour", "--no-run-now")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `^schedule hourly added: first due at \d{4}-`, r.stdout)

	r = ace(t, n1.DSN, "schedule", "add", "both", "table-diff", "--args", `{"table_name": "public.t"}`, "--every", "1 hour", "--cron", "0 * * * *")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, "a schedule needs exactly one of every and cron, got both")

	r = ace(t, n1.DSN, "schedule", "pause", "hourly")
	require.Equal(t, exitOK, r.code, r)
	r = ace(t, n1.DSN, "schedule", "list")
	require.Equal(t, exitOK, r.code, r)
	require.Regexp(t, `(?m)^NAME +OWNER +TYPE +WHEN +SCOPE +ENABLED +NEXT DUE +RUNS +SKIPPED +FAILED +LAST ERROR$`, r.stdout)
	require.Regexp(t, `(?m)^hourly +postgres +table-diff +every 01:00:00 +node +false +\S+ +0 +0 +0\s*$`, r.stdout)

	r = ace(t, n1.DSN, "schedule", "resume", "hourly")
	require.Equal(t, exitOK, r.code, r)
	r = ace(t, n1.DSN, "schedule", "run", "hourly")
	require.Equal(t, exitOK, r.code, r)
	id, err := uuid.Parse(r.stdout[:len(r.stdout)-1])
	require.NoError(t, err, r)
	task, err := sqlapi.GetTask(context.Background(), n1.Pool, id)
	require.NoError(t, err)
	require.Contains(t, string(task.Args), `"schedule": "hourly"`)

	r = ace(t, n1.DSN, "schedule", "list", "--json")
	require.Equal(t, exitOK, r.code, r)
	var listed []sqlapi.Schedule
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &listed), r)
	require.Len(t, listed, 1)
	require.True(t, listed[0].Enabled)
	require.Equal(t, int64(1), listed[0].Runs)

	r = ace(t, n1.DSN, "schedule", "remove", "hourly")
	require.Equal(t, exitOK, r.code, r)
	r = ace(t, n1.DSN, "schedule", "remove", "hourly")
	require.Equal(t, exitError, r.code, r)
	require.Contains(t, r.stderr, `has no schedule "hourly"`)
}

// aceYAML is an ace.yaml with ACE's scheduler sections, as ACE's documentation shows them.
const aceYAML = `
default_cluster: demo
schedule_jobs:
  - name: t1
    cluster_name: demo
    table_name: public.t
  - name: t2
    cluster_name: demo
    table_name: public.t
    args:
      block_rows: 5000
      nodes: all
      output: json
      quiet: false
      dbname: mydb
      max_cpu_ratio: 0.7
  - name: s1
    type: schema-diff
    schema_name: public
  - name: unused
    table_name: public.t
schedule_config:
  - job_name: t1
    crontab_schedule: "0 0 * * *"
  - job_name: t2
    run_frequency: 5m
    enabled: true
  - job_name: s1
    run_frequency: 1h30m
    enabled: true
`

// TestScheduleImport: ACE's schedule_jobs and schedule_config become schedules, with ACE's
// behaviour (a run at once, no overlap, disabled unless enabled) and notes on what was left out;
// a bad file imports nothing.
func TestScheduleImport(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	createTable(e, 10)
	n1 := e.Node("n1")
	write := func(body string) string {
		path := filepath.Join(t.TempDir(), "ace.yaml")
		require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
		return path
	}

	r := ace(t, n1.DSN, "schedule", "import", write(aceYAML))
	require.Equal(t, exitOK, r.code, r)
	require.Contains(t, r.stderr, "note: job t2: left out dbname, max_cpu_ratio, quiet (no meaning to ace-agent)")
	require.Contains(t, r.stderr, "note: job unused has no schedule_config entry: not imported")
	all, err := sqlapi.Schedules(context.Background(), n1.Pool)
	require.NoError(t, err)
	byName := map[string]sqlapi.Schedule{}
	for _, s := range all {
		byName[s.Name] = s
	}
	require.Len(t, byName, 3)
	t1, t2, s1 := byName["t1"], byName["t2"], byName["s1"]
	require.Equal(t, "0 0 * * *", *t1.Cron)
	require.False(t, t1.Enabled, "ACE runs a schedule only when enabled is true")
	require.Equal(t, "00:05:00", *t2.Every)
	require.True(t, t2.Enabled)
	require.Equal(t, "skip", t2.Overlap)
	require.JSONEq(t, `{"table_name": "public.t", "block_size": 5000, "nodes": "all", "output": "json"}`, string(t2.Args))
	require.Equal(t, "schema-diff", s1.TaskType)
	require.Equal(t, "01:30:00", *s1.Every)

	cases := []struct{ name, body, msg string }{
		{"an unknown job", "schedule_jobs: []\nschedule_config:\n  - job_name: ghost\n    run_frequency: 1h\n", `names job "ghost"`},
		{"both frequency and crontab", "schedule_jobs:\n  - name: j\n    table_name: public.t\nschedule_config:\n  - job_name: j\n    run_frequency: 1h\n    crontab_schedule: '0 * * * *'\n",
			"give exactly one of crontab_schedule and run_frequency"},
		{"a table that is not there: nothing imported", "schedule_jobs:\n  - name: ok\n    table_name: public.t\n  - name: bad\n    table_name: public.missing\nschedule_config:\n  - job_name: ok\n    run_frequency: 1h\n  - job_name: bad\n    run_frequency: 1h\n",
			`import job bad (nothing was imported): schedule bad: table "public.missing" does not exist on this node`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ace(t, n1.DSN, "schedule", "import", write(c.body))
			require.Equal(t, exitError, r.code, r)
			require.Contains(t, r.stderr, c.msg)
			after, err := sqlapi.Schedules(context.Background(), n1.Pool)
			require.NoError(t, err)
			require.Len(t, after, 3, "nothing more was imported")
		})
	}
}
