package agent_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// Issue 16, item 14: the queued limit counted current_user, so a submitter who SET ROLE to a
// group she belongs to had a second quota. It counts the login now.
func TestSetRoleGivesNoSecondQuota(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	ctx := context.Background()
	e.set("max_queued_tasks_per_role", "2")
	bob := e.role("bob")
	group := pgx.Identifier{e.DB + "_bobs_group"}.Sanitize()
	e.ExecAll(fmt.Sprintf(`CREATE ROLE %s NOLOGIN; GRANT %[1]s TO %s; GRANT SELECT ON t TO %[1]s`, group, pgx.Identifier{bob}.Sanitize()))
	asBob := e.connect("n1", bob)
	e.submit(asBob, `SELECT ace.table_diff('public.t')`)
	_, err := asBob.Exec(ctx, `SET ROLE `+group)
	require.NoError(t, err)
	e.submit(asBob, `SELECT ace.table_diff('public.t')`)

	for _, role := range []string{group, "NONE"} {
		t.Run("as "+role, func(t *testing.T) {
			_, err := asBob.Exec(ctx, `SET ROLE `+role)
			require.NoError(t, err)
			_, err = asBob.Exec(ctx, `SELECT ace.table_diff('public.t')`)
			pgErr := pgError(t, err)
			require.Equal(t, pgerrcode.ConfigurationLimitExceeded, pgErr.Code, pgErr.Message)
			require.Contains(t, pgErr.Message, "role "+bob+" already has 2 queued tasks, as many as max_queued_tasks_per_role allows")
		})
	}
	t.Run("no user may lock a login's row of the submission line", func(t *testing.T) {
		_, err := asBob.Exec(ctx, `SELECT * FROM ace.role_submissions FOR UPDATE`)
		require.Equal(t, pgerrcode.InsufficientPrivilege, pgError(t, err).Code)
	})
	var logins []string
	rows, err := e.agent.Query(ctx, `SELECT DISTINCT submitted_session_user::text FROM ace.tasks`)
	require.NoError(t, err)
	logins, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{bob}, logins, "the server records the login, whatever role submitted")
}

// Issue 16, item 14: any login could insert tasks, though only members of ace_submitters are
// meant to. The insert trigger now refuses the others, naming the fix.
func TestOnlySubmittersMaySubmit(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	ctx := context.Background()
	outsider := e.DB + "_outsider"
	e.ExecAll(fmt.Sprintf(`CREATE ROLE %s LOGIN; GRANT SELECT ON t TO %[1]s`, pgx.Identifier{outsider}.Sanitize()))
	asOutsider := e.connect("n1", outsider)
	for name, sql := range map[string]string{
		"ace.table_diff": `SELECT ace.table_diff('public.t')`,
		"direct insert":  `INSERT INTO ace.tasks (task_type, args) VALUES ('table-diff', '{"table_name": "public.t"}')`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := asOutsider.Exec(ctx, sql)
			pgErr := pgError(t, err)
			require.Equal(t, pgerrcode.InsufficientPrivilege, pgErr.Code, pgErr.Message)
			require.Equal(t, "role "+outsider+" may not submit tasks: it is not a member of ace_submitters", pgErr.Message)
			require.Contains(t, pgErr.Hint, "GRANT ace_submitters TO "+outsider)
		})
	}
	e.submit(e.connect("n1", e.role("bob")), `SELECT ace.table_diff('public.t')`)
}

// Without a role ace_submitters, only superusers may submit; the error says how to make it.
func TestSubmittersRoleMustExist(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t) // the trust cluster has no ace_submitters
	n1 := e.Node("n1")
	login := e.DB + "_login"
	n1.Exec(t, fmt.Sprintf(`CREATE ROLE %s LOGIN`, pgx.Identifier{login}.Sanitize()))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, strings.Replace(n1.DSN, "user=postgres", "user="+login, 1))
	require.NoError(t, err)
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, `INSERT INTO ace.tasks (task_type, args) VALUES ('table-diff', '{"table_name": "public.t"}')`)
	pgErr := pgError(t, err)
	require.Equal(t, pgerrcode.InsufficientPrivilege, pgErr.Code, pgErr.Message)
	require.Contains(t, pgErr.Message, "only members of ace_submitters may, and that role does not exist")
	require.Contains(t, pgErr.Hint, "CREATE ROLE ace_submitters NOLOGIN; GRANT ace_submitters TO "+login)
}

// Issue 16, item 14: finished tasks were kept forever. The agent deletes those older than
// task_retention, with their results, and never a queued or running one, nor a diff that a
// waiting repair needs.
func TestFinishedTasksExpire(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	ctx := context.Background()
	n1 := e.Node("n1")
	asBob := e.connect("n1", e.role("bob"))
	task := func(status, age string) uuid.UUID {
		id := e.submit(asBob, `SELECT ace.table_diff('public.t')`)
		n1.Exec(t, `UPDATE ace.tasks SET status = $2, submitted_at = now() - $3::interval, started_at = now() - $3::interval,
			finished_at = CASE WHEN $2 IN ('COMPLETED', 'FAILED', 'CANCELLED') THEN now() - $3::interval END,
			claimed_by = CASE WHEN $2 <> 'QUEUED' THEN 'an agent' END WHERE task_id = $1`, id, status, age)
		return id
	}
	completed := task("COMPLETED", "31 days")
	task("FAILED", "40 days")
	task("CANCELLED", "1 year")
	n1.Exec(t, `INSERT INTO ace.diff_results (task_id, row_no, pk, pk_sort, kind, rows) VALUES ($1, 1, '{}', '[]', 'missing', '{}')`, completed)
	recent, queued, running := task("COMPLETED", "29 days"), task("QUEUED", "1 year"), task("RUNNING", "1 year")
	needed := task("COMPLETED", "1 year")
	n1.Exec(t, `UPDATE ace.tasks SET args = jsonb_build_object('diff_task', $2::text) WHERE task_id = $1`, queued, needed)
	kept := []uuid.UUID{recent, queued, running, needed}
	remaining := func() []uuid.UUID {
		rows, err := e.agent.Query(ctx, `SELECT task_id FROM ace.tasks`)
		require.NoError(t, err)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		require.NoError(t, err)
		return ids
	}

	t.Run("only the schema's owner may delete", func(t *testing.T) {
		_, err := asBob.Exec(ctx, `SELECT ace.delete_expired_tasks(10)`)
		require.Equal(t, pgerrcode.InsufficientPrivilege, pgError(t, err).Code)
	})
	t.Run("in batches, finished tasks older than task_retention", func(t *testing.T) {
		var n int
		require.NoError(t, e.agent.QueryRow(ctx, `SELECT ace.delete_expired_tasks(2)`).Scan(&n))
		require.Equal(t, 2, n)
		require.NoError(t, e.agent.QueryRow(ctx, `SELECT ace.delete_expired_tasks(2)`).Scan(&n))
		require.Equal(t, 1, n)
		require.ElementsMatch(t, kept, remaining())
		var results int
		require.NoError(t, e.agent.QueryRow(ctx, `SELECT count(*) FROM ace.diff_results WHERE task_id = $1`, completed).Scan(&results))
		require.Zero(t, results)
	})
	t.Run("by the agent", func(t *testing.T) {
		expired := task("FAILED", "31 days")
		e.set("task_retention", "30 days")
		cfg := n1.AgentConfig()
		cfg.RetentionInterval = 100 * time.Millisecond
		n1.StartAgentWith(t, cfg)
		require.Eventually(t, func() bool { return !slices.Contains(remaining(), expired) }, 30*time.Second, 50*time.Millisecond)
		// The agent also claims the queued task and recovers the running one, whose fake agent
		// has no heartbeat; once they end, the diff the queued one named is no longer needed.
		// Their protection is shown above, where no agent runs; here, the recent task stays.
		require.Contains(t, remaining(), recent)
	})
}

// Issue 16, item 19: cdc_timeout had no upper bound, so one mtree-diff could hold an agent's
// slot for as long as it asked. It is capped by max_cdc_timeout, like recheck_after.
func TestCdcTimeoutIsCapped(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	ctx := context.Background()
	asBob := e.connect("n1", e.role("bob"))
	for name, sql := range map[string]string{
		"interval":         `SELECT ace.mtree_diff('public.t', cdc_timeout => '11 minutes')`,
		"interval in args": `INSERT INTO ace.tasks (task_type, args) VALUES ('mtree-diff', '{"table_name": "public.t", "cdc_timeout": "100 years"}')`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := asBob.Exec(ctx, sql)
			pgErr := pgError(t, err)
			require.Equal(t, pgerrcode.InvalidParameterValue, pgErr.Code, pgErr.Message)
			require.Contains(t, pgErr.Message, "is longer than max_cdc_timeout (10 minutes)")
			require.Contains(t, pgErr.Hint, "WHERE name = 'max_cdc_timeout'")
		})
	}
	t.Run("within the cap, the diff goes on to look for its tree", func(t *testing.T) {
		_, err := asBob.Exec(ctx, `SELECT ace.mtree_diff('public.t', cdc_timeout => '10 minutes')`)
		require.NotContains(t, pgError(t, err).Message, "cdc_timeout")
	})
	t.Run("the owner sets the cap", func(t *testing.T) {
		e.set("max_cdc_timeout", "1 minute")
		_, err := asBob.Exec(ctx, `SELECT ace.mtree_diff('public.t', cdc_timeout => '2 minutes')`)
		require.Contains(t, pgError(t, err).Message, "cdc_timeout 00:02:00 is longer than max_cdc_timeout (1 minute)")
	})
}

// Issue 16, item 18: reports were named <schema>_<table>_diffs-<second>, so the diffs of a.b_c
// and a_b.c that ended in the same second wrote one file, the second over the first. Each task's
// report now has a name of its own.
func TestReportNamesAreUniquePerTask(t *testing.T) {
	t.Parallel()
	e := setupNoAgents(t, `CREATE SCHEMA a; CREATE SCHEMA a_b;
		CREATE TABLE a.b_c (id int PRIMARY KEY, v text); CREATE TABLE a_b.c (id int PRIMARY KEY, v text);
		INSERT INTO a.b_c VALUES (1, 'x'); INSERT INTO a_b.c VALUES (1, 'x')`)
	e.Node("n2").Exec(t, `UPDATE a.b_c SET v = 'only in a.b_c'; UPDATE a_b.c SET v = 'only in a_b.c'`)
	n1 := e.Node("n1")
	cfg := n1.AgentConfig()
	cfg.ReportDir = t.TempDir()
	ctx := context.Background()
	stamp := regexp.MustCompile(`_diffs-(\d{14})`)
	// Until both end in the same second, which collided before; the names must differ anyway.
	for attempt := 0; attempt < 5; attempt++ {
		var ids [2]uuid.UUID
		for i, table := range []string{"a.b_c", "a_b.c"} {
			require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT ace.table_diff($1, output => 'json')`, table).Scan(&ids[i]))
		}
		agent := n1.StartAgentWith(t, cfg)
		var files [2]string
		for i, id := range ids {
			task := n1.Wait(t, id)
			require.Equal(t, sqlapi.StatusCompleted, task.Status, "%v", task.Error)
			var s engine.DiffSummary
			require.NoError(t, json.Unmarshal(task.Result, &s))
			files[i] = s.ReportFile
		}
		require.NoError(t, agent.Stop())
		require.NotEqual(t, files[0], files[1])
		for i, want := range []string{"only in a.b_c", "only in a_b.c"} {
			raw, err := os.ReadFile(files[i])
			require.NoError(t, err)
			require.Contains(t, string(raw), want, files[i])
			require.Contains(t, filepath.Base(files[i]), ids[i].String())
		}
		if stamp.FindString(files[0]) == stamp.FindString(files[1]) {
			return
		}
	}
}

// Issue 16, item 14: the running limit counted the role too, so a task submitted after SET ROLE
// to a group ran beside the login's own. It counts the login now.
func TestSetRoleGivesNoSecondRunningSlot(t *testing.T) {
	t.Parallel()
	e := newQueueEnv(t)
	ctx := context.Background()
	e.set("max_running_tasks_per_role", "1")
	bob := e.role("bob")
	group := pgx.Identifier{e.DB + "_bobs_group"}.Sanitize()
	e.ExecAll(fmt.Sprintf(`CREATE ROLE %s NOLOGIN; GRANT %[1]s TO %s; GRANT SELECT ON t TO %[1]s`, group, pgx.Identifier{bob}.Sanitize()))
	asBob := e.connect("n1", bob)
	first := e.submit(asBob, `SELECT ace.table_diff('public.t')`)
	_, err := asBob.Exec(ctx, `SET ROLE `+group)
	require.NoError(t, err)
	e.submit(asBob, `SELECT ace.table_diff('public.t')`)

	run, _ := e.claim("agent")
	require.Equal(t, first, run.Task.ID)
	none, _ := e.claim("agent")
	require.Nil(t, none, "bob's task as the group waits for his first")
}
