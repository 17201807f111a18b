package agent_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/sqlapi"
)

func TestScratchResyncTiming(t *testing.T) {
	e := setup(t, `CREATE TABLE public.t (id bigint PRIMARY KEY, v text, w text);
		INSERT INTO public.t SELECT g, 'v' || g, md5(g::text) FROM generate_series(1, 200000) g`)
	e.Node("n3").Exec(t, `TRUNCATE public.t`)
	e.ExecAll(`VACUUM ANALYZE public.t`)
	start := time.Now()
	id, task := e.diff(`'public.t'`)
	require.Equal(t, sqlapi.StatusCompleted, task.Status)
	t.Logf("diff %s", time.Since(start))
	start = time.Now()
	_, s := e.completedRepair(id, `strategy => 'majority', target_nodes => ARRAY['n3']`)
	t.Logf("repair %s %d", time.Since(start), s.Inserted)
}

func TestScratchPieces(t *testing.T) {
	e := setup(t, `CREATE TABLE public.t (id bigint PRIMARY KEY, v text, w text);
		INSERT INTO public.t SELECT g, 'v' || g, md5(g::text) FROM generate_series(1, 200000) g`)
	e.Node("n3").Exec(t, `TRUNCATE public.t`)
	e.ExecAll(`VACUUM ANALYZE public.t`)
	id, task := e.diff(`'public.t'`)
	require.Equal(t, sqlapi.StatusCompleted, task.Status)
	rid, _ := e.completedRepair(id, `strategy => 'majority', target_nodes => ARRAY['n3']`)
	p := e.Node("n1").Pool
	for _, q := range []string{
		`SELECT count(*) FROM (SELECT pk, pk_sort, kind, rows, versions, meta FROM ace.diff_results WHERE task_id = $1 ORDER BY pk_sort, row_no) x`,
		`SELECT count(*) FROM (SELECT pk, pk_sort, kind, rows, versions, meta FROM ace.diff_results WHERE task_id = $1) x`,
		`SELECT count(*) FROM (SELECT pk_sort FROM ace.diff_results WHERE task_id = $1 ORDER BY pk_sort, row_no) x`,
	} {
		start := time.Now()
		_, err := p.Exec(t.Context(), q, id)
		require.NoError(t, err)
		t.Logf("%s: %s", time.Since(start), q[:60])
	}
	start := time.Now()
	_, err := p.Exec(t.Context(), `UPDATE ace.repair_actions SET applied = true WHERE task_id = $1`, rid)
	require.NoError(t, err)
	t.Logf("mark applied %s", time.Since(start))
	start = time.Now()
	_, err = p.Exec(t.Context(), `CREATE TEMP TABLE x AS SELECT * FROM ace.repair_actions WHERE task_id = $1`, rid)
	require.NoError(t, err)
	t.Logf("copy actions-ish %s", time.Since(start))
}
