package sqlapi_test

import (
	"cmp"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// pgCronDB is the database pg_cron runs its jobs in (cron.database_name), which holds ace.
const pgCronDB = "crondb"

// TestPgCronSchedulesADiff: the path docs/schedules.md gives a DBA who already runs pg_cron. A
// role schedules ace.table_diff with cron.schedule; pg_cron runs it as that role, so the task is
// that role's, and the agent runs it like any other. Debian's postgresql-15-cron (make test
// installs it) runs jobs on minute boundaries, so the first run comes within a minute.
func TestPgCronSchedulesADiff(t *testing.T) {
	t.Parallel()
	lib := filepath.Join(filepath.Dir(cmp.Or(os.Getenv("ACE_PG_BINDIR"), localpg.DefaultBinDir)), "lib", "pg_cron.so")
	if _, err := os.Stat(lib); err != nil {
		t.Skipf("pg_cron is not installed (%s): apt-get install -y postgresql-15-cron, or run make test as root, which installs it", lib)
	}
	ctx := context.Background()
	local := localpg.StartT(t, localpg.Options{Nodes: 2, Settings: map[string]string{
		"shared_preload_libraries": "pg_cron", "cron.database_name": pgCronDB, "cron.use_background_workers": "on",
		"max_worker_processes": "16",
	}})
	e := testcluster.NewOn(t, local.Nodes, pgCronDB)
	e.ExecAll(`CREATE TABLE public.t (id int PRIMARY KEY); INSERT INTO public.t SELECT generate_series(1, 100)`)
	n1 := e.Node("n1")
	n1.StartAgent(t)
	e.ExecAll(`CREATE ROLE ace_submitters NOLOGIN; CREATE ROLE dba LOGIN IN ROLE ace_submitters; GRANT SELECT ON public.t TO dba`)
	n1.Exec(t, `CREATE EXTENSION pg_cron; GRANT USAGE ON SCHEMA cron TO dba`)

	dba, err := pgx.Connect(ctx, n1.DSN+" user=dba")
	require.NoError(t, err)
	defer dba.Close(ctx)
	var job int64
	require.NoError(t, dba.QueryRow(ctx, `SELECT cron.schedule('diff-t', '* * * * *', $$SELECT ace.table_diff('public.t')$$)`).Scan(&job))

	var by, status string
	require.Eventually(t, func() bool {
		err := n1.Pool.QueryRow(ctx, `SELECT submitted_by, status FROM ace.tasks WHERE task_type = 'table-diff'
			ORDER BY submitted_at LIMIT 1`).Scan(&by, &status)
		return err == nil && (status == "COMPLETED" || status == "FAILED")
	}, 3*time.Minute, 200*time.Millisecond, "pg_cron's job submits a diff, which the agent runs")
	require.Equal(t, "dba", by, "the task is the role's that scheduled the job")
	require.Equal(t, "COMPLETED", status)
	var ran string
	require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT status FROM cron.job_run_details WHERE jobid = $1 ORDER BY runid LIMIT 1`, job).Scan(&ran))
	require.Equal(t, "succeeded", ran)
	_, err = dba.Exec(ctx, `SELECT cron.unschedule('diff-t')`)
	require.NoError(t, err)
}
