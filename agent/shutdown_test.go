package agent_test

import (
	"context"
	"encoding/json"
	"math/rand"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/repair"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// The shutdown tests stop n1's agent (as SIGTERM does: its context ends) at random moments of a
// task, with a short grace, sometimes while the node drops the agent's connections, and check
// that every task ends as docs/operations.md promises (SIGTERM). ACE_SHUTDOWN_TRIES sets the tries per task type
// (default 20); ACE_SHUTDOWN_SEED repeats a run whose seed a failure printed.

const shutdownRows = 6000

// shutdownDDL is the table; n1 holds rows 1..shutdownRows, and plantDrift makes n2 and n3 differ.
const shutdownDDL = `CREATE TABLE public.t (id int PRIMARY KEY, v text NOT NULL, pad text NOT NULL)`

// shutdownEnv is a test database with the drifted table and an agent on n1 only, which each try
// stops and starts again.
type shutdownEnv struct {
	*diffEnv
	rng   *rand.Rand
	seed  int64
	agent *testcluster.Agent
	span  time.Duration // how long an uninterrupted task of the kind under test takes
}

func envInt(t *testing.T, name string, dflt int64) int64 {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return dflt
	}
	n, err := strconv.ParseInt(v, 10, 64)
	require.NoError(t, err, name)
	return n
}

func setupShutdown(t *testing.T) *shutdownEnv {
	t.Helper()
	seed := envInt(t, "ACE_SHUTDOWN_SEED", time.Now().UnixNano())
	t.Logf("seed %d (ACE_SHUTDOWN_SEED=%d repeats this run)", seed, seed)
	e := testcluster.New(t)
	e.ExecAll(shutdownDDL)
	e.ExecAll(`INSERT INTO t SELECT g, 'v' || g, repeat('x', 100) FROM generate_series(1, $1::int) g`, shutdownRows)
	s := &shutdownEnv{diffEnv: &diffEnv{Env: e, t: t}, rng: rand.New(rand.NewSource(seed)), seed: seed}
	s.plantDrift()
	s.startAgent()
	return s
}

// plantDrift gives n2 a different v in every third row, and n3 lacks every fifth row and has
// 100 rows beyond the others. It is idempotent, so it restores the drift a repair removed.
func (s *shutdownEnv) plantDrift() {
	s.Node("n2").Exec(s.t, `UPDATE t SET v = 'n2-' || id WHERE id % 3 = 0`)
	s.Node("n3").Exec(s.t, `DELETE FROM t WHERE id % 5 = 0`)
	s.Node("n3").Exec(s.t, `INSERT INTO t SELECT g, 'extra' || g, '' FROM generate_series($1::int + 1, $1::int + 100) g
		ON CONFLICT DO NOTHING`, shutdownRows)
}

// startAgent starts n1's agent with a grace between 0 and 30ms.
func (s *shutdownEnv) startAgent() {
	cfg := s.Node("n1").AgentConfig()
	cfg.ShutdownGrace = time.Duration(s.rng.Int63n(int64(30 * time.Millisecond)))
	s.agent = s.Node("n1").StartAgentWith(s.t, cfg)
}

// stopAt waits a random time within 1.2 spans, then stops the agent. One time in three the node
// also drops every connection of the agent's while it shuts down. It returns once the agent is
// stopped.
func (s *shutdownEnv) stopAt(try int) {
	delay := time.Duration(s.rng.Int63n(int64(s.span) * 6 / 5))
	drop := s.rng.Intn(3) == 0
	dropAfter := time.Duration(s.rng.Int63n(int64(40 * time.Millisecond)))
	s.t.Logf("try %d: stop after %v, drop connections: %v (after %v more)", try, delay, drop, dropAfter)
	time.Sleep(delay)
	stopped := make(chan error, 1)
	go func() { stopped <- s.agent.Stop() }()
	if drop {
		time.Sleep(time.Millisecond + dropAfter)
		s.dropAgentConnections()
	}
	require.NoError(s.t, <-stopped)
}

// dropAgentConnections ends every session of the agent's on n1, as a restarting node would.
func (s *shutdownEnv) dropAgentConnections() {
	s.Node("n1").Exec(s.t, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND (application_name = 'ace-agent' OR application_name LIKE 'ace-agent writer %')
		AND pid <> pg_backend_pid()`)
}

// errorOf is a task's error text.
func errorOf(task sqlapi.Task) string {
	if task.Error == nil {
		return ""
	}
	return *task.Error
}

// task reads a task on n1.
func (s *shutdownEnv) task(id uuid.UUID) sqlapi.Task {
	task, err := sqlapi.GetTask(context.Background(), s.Node("n1").Pool, id)
	require.NoError(s.t, err)
	return task
}

// requireHandedBack checks a task the shutdown put back in the queue: not counted, claimed by
// no one, and nothing of its attempt left.
func (s *shutdownEnv) requireHandedBack(id uuid.UUID, task sqlapi.Task) {
	s.t.Helper()
	require.Equal(s.t, 0, task.Attempts, "a handed-back attempt does not count")
	require.Nil(s.t, task.ClaimedBy)
	require.Nil(s.t, task.Progress)
	require.EqualValues(s.t, 0, s.scalar("n1", `SELECT count(*) FROM ace.diff_results WHERE task_id = $1`, id))
	require.EqualValues(s.t, 0, s.scalar("n1", `SELECT count(*) FROM ace.repair_actions WHERE task_id = $1`, id))
}

// afterStop checks the task's status once the agent stopped, calls handedBack if it is QUEUED,
// starts the agent again and returns the task as it ends.
func (s *shutdownEnv) afterStop(try int, id uuid.UUID, handedBack func(task sqlapi.Task)) sqlapi.Task {
	s.t.Helper()
	task := s.task(id)
	s.t.Logf("try %d: %s after the shutdown", try, task.Status)
	switch task.Status {
	case sqlapi.StatusCompleted:
	case sqlapi.StatusQueued:
		s.requireHandedBack(id, task)
		handedBack(task)
	default:
		s.t.Fatalf("seed %d try %d: task is %s after the shutdown, not COMPLETED or QUEUED: %s", s.seed, try, task.Status, errorOf(task))
	}
	s.startAgent()
	task = s.Node("n1").Wait(s.t, id)
	require.Equal(s.t, sqlapi.StatusCompleted, task.Status, "seed %d try %d: %s", s.seed, try, errorOf(task))
	require.Equal(s.t, 1, task.Attempts, "seed %d try %d", s.seed, try)
	return task
}

func TestShutdownAtRandomPoints(t *testing.T) {
	t.Parallel()
	tries := int(envInt(t, "ACE_SHUTDOWN_TRIES", 20))
	t.Run("table-diff", func(t *testing.T) {
		t.Parallel()
		s := setupShutdown(t)
		want := s.calibrateDiff()
		for try := range tries {
			s.tryDiff(try, want)
		}
	})
	t.Run("table-repair", func(t *testing.T) {
		t.Parallel()
		s := setupShutdown(t)
		want := s.calibrateRepair()
		for try := range tries {
			s.tryRepair(try, want)
		}
	})
}

// calibrateDiff runs the diff once uninterrupted, and returns its summary.
func (s *shutdownEnv) calibrateDiff() *engine.DiffSummary {
	start := time.Now()
	id, task := s.diff(`'public.t'`)
	s.span = time.Since(start)
	want := s.requireDiff(-1, id, task, nil)
	s.t.Logf("a diff takes %v and finds %d differing keys", s.span, want.DifferingKeys)
	return want
}

// tryDiff stops the agent at a random moment of a diff; the diff must complete, before the
// shutdown or once handed back, with the calibrated result and no row twice.
func (s *shutdownEnv) tryDiff(try int, want *engine.DiffSummary) {
	var id uuid.UUID
	require.NoError(s.t, s.Node("n1").Pool.QueryRow(context.Background(), `SELECT ace.table_diff('public.t')`).Scan(&id))
	s.stopAt(try)
	task := s.afterStop(try, id, func(sqlapi.Task) {})
	s.requireDiff(try, id, task, want)
}

// requireDiff checks a completed diff against want (the calibrated summary; nil: the planted
// drift), and that its stored rows are exactly one per differing key.
func (s *shutdownEnv) requireDiff(try int, id uuid.UUID, task sqlapi.Task, want *engine.DiffSummary) *engine.DiffSummary {
	s.t.Helper()
	require.Equal(s.t, sqlapi.StatusCompleted, task.Status, "seed %d try %d: %s", s.seed, try, errorOf(task))
	var got engine.DiffSummary
	require.NoError(s.t, json.Unmarshal(task.Result, &got))
	if want != nil {
		require.Equal(s.t, want.DifferingKeys, got.DifferingKeys, "seed %d try %d", s.seed, try)
		require.Equal(s.t, want.DiffRowsCount, got.DiffRowsCount, "seed %d try %d", s.seed, try)
	}
	require.EqualValues(s.t, got.DifferingKeys, s.scalar("n1", `SELECT count(DISTINCT pk) FROM ace.diff_results WHERE task_id = $1`, id))
	require.EqualValues(s.t, got.DifferingKeys, s.scalar("n1", `SELECT count(*) FROM ace.diff_results WHERE task_id = $1`, id),
		"seed %d try %d: rows of an abandoned attempt were left", s.seed, try)
	return &got
}

// fingerprint sums up a node's table.
func (s *shutdownEnv) fingerprint(node string) string {
	return s.scalar(node, `SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM t`).(string)
}

// calibrateRepair runs the repair once uninterrupted, and returns its summary.
func (s *shutdownEnv) calibrateRepair() *repair.Summary {
	diff := s.diffID("public.t")
	start := time.Now()
	_, want := s.completedRepair(diff, `'n1'`)
	s.span = time.Since(start)
	s.t.Logf("a repair takes %v: %d inserted, %d updated, %d deleted", s.span, want.Inserted, want.Updated, want.Deleted)
	require.True(s.t, want.FullyRepaired)
	return want
}

// tryRepair stops the agent at a random moment of a repair, atomic or not. Each node must hold
// either all of the repair or none of it; a handed-back repair must have changed nothing, and
// must re-plan from what the nodes hold when it runs again: a row fixed by hand meanwhile is
// skipped.
func (s *shutdownEnv) tryRepair(try int, want *repair.Summary) {
	s.plantDrift()
	diff := s.diffID("public.t")
	target := s.fingerprint("n1")
	before := map[string]string{"n2": s.fingerprint("n2"), "n3": s.fingerprint("n3")}
	atomic := s.rng.Intn(2) == 0
	s.t.Logf("try %d: atomic: %v", try, atomic)
	var id uuid.UUID
	require.NoError(s.t, s.Node("n1").Pool.QueryRow(context.Background(), `SELECT ace.table_repair($1, 'n1', atomic => $2)`,
		diff, atomic).Scan(&id))
	s.stopAt(try)
	fixedByHand := false
	task := s.afterStop(try, id, func(sqlapi.Task) {
		for node, fp := range before {
			require.Equal(s.t, fp, s.fingerprint(node), "seed %d try %d: a handed-back repair changed %s", s.seed, try, node)
		}
		s.Node("n2").Exec(s.t, `UPDATE t SET v = 'v3' WHERE id = 3`)
		fixedByHand = true
	})
	s.requireRepaired(try, id, task, want, target, fixedByHand)
}

// requireRepaired checks a completed repair: every node holds n1's rows, the report has one
// action per node and key from one attempt, and a row fixed by hand was left alone.
func (s *shutdownEnv) requireRepaired(try int, id uuid.UUID, task sqlapi.Task, want *repair.Summary, target string, fixedByHand bool) {
	s.t.Helper()
	var got repair.Summary
	require.NoError(s.t, json.Unmarshal(task.Result, &got))
	for _, node := range []string{"n2", "n3"} {
		require.Equal(s.t, target, s.fingerprint(node), "seed %d try %d: %s is not repaired", s.seed, try, node)
	}
	updated := want.Updated
	if fixedByHand {
		updated--
		require.Equal(s.t, repair.ReasonAlreadyInSync, s.report(id)[`n2 {"id": 3}`].Reason, "seed %d try %d", s.seed, try)
	}
	require.Equal(s.t, []int64{want.Inserted, updated, want.Deleted}, []int64{got.Inserted, got.Updated, got.Deleted}, "seed %d try %d", s.seed, try)
	require.EqualValues(s.t, 1, s.scalar("n1", `SELECT count(DISTINCT attempt) FROM ace.repair_actions WHERE task_id = $1`, id))
	require.EqualValues(s.t, want.Inserted+updated+want.Deleted,
		s.scalar("n1", `SELECT count(*) FROM ace.repair_rows($1) WHERE applied`, id), "seed %d try %d", s.seed, try)
}

// vanishedRepair submits a repair of a drifted table on n1 and claims it as an agent that then
// vanishes (its session ends) after recording the given actions.
func vanishedRepair(t *testing.T, repairArgs string, record []repair.Action) (*diffEnv, uuid.UUID) {
	t.Helper()
	ctx := context.Background()
	e := &diffEnv{Env: testcluster.New(t), t: t}
	e.ExecAll(smallDDL)
	e.ExecAll(`INSERT INTO v SELECT g, 'x' || g FROM generate_series(1, 10) g`)
	e.Node("n2").Exec(t, `UPDATE v SET x = 'drift' WHERE id = 1`)
	n1 := e.Node("n1")
	a := n1.StartAgent(t)
	diff := e.diffID("public.v")
	require.NoError(t, a.Stop())
	var id uuid.UUID
	require.NoError(t, n1.Pool.QueryRow(ctx, `SELECT ace.table_repair($1, `+repairArgs+`)`, diff).Scan(&id))
	conn, err := pgx.Connect(ctx, n1.DSN)
	require.NoError(t, err)
	run, err := sqlapi.Claim(ctx, conn, n1.Pool, "vanished-agent")
	require.NoError(t, err)
	require.Equal(t, id, run.Task.ID)
	w, err := run.RepairActions(ctx)
	require.NoError(t, err)
	require.NoError(t, w.WriteRepairActions(ctx, record))
	require.NoError(t, conn.Close(ctx))
	n1.StartAgent(t)
	return e, id
}

func TestRecoveryRequeuesARepairOnlyIfItChangedNothing(t *testing.T) {
	t.Parallel()
	action := func(kind, reason string) repair.Action {
		return repair.Action{Node: "n2", Kind: kind, PK: json.RawMessage(`{"id": 1}`), PKSort: json.RawMessage(`[1]`),
			Before: json.RawMessage(`{"id": 1, "x": "drift"}`), After: json.RawMessage(`{"id": 1, "x": "x1"}`), Reason: reason}
	}
	t.Run("nothing recorded", func(t *testing.T) {
		t.Parallel()
		e, id := vanishedRepair(t, `'n1'`, nil)
		requireRequeuedAndRepaired(e, id)
	})
	t.Run("only skips recorded", func(t *testing.T) {
		t.Parallel()
		e, id := vanishedRepair(t, `'n1'`, []repair.Action{action(repair.ActionSkip, repair.ReasonChangedSinceDiff)})
		requireRequeuedAndRepaired(e, id)
	})
	t.Run("dry run", func(t *testing.T) {
		t.Parallel()
		e, id := vanishedRepair(t, `'n1', dry_run => true`, []repair.Action{action(repair.ActionUpdate, "")})
		task := e.Node("n1").Wait(t, id)
		require.Equal(t, sqlapi.StatusCompleted, task.Status, "error: %s", errorOf(task))
		require.Equal(t, 2, task.Attempts)
		require.Equal(t, "drift", e.scalar("n2", `SELECT x FROM v WHERE id = 1`))
	})
	t.Run("a change recorded", func(t *testing.T) {
		t.Parallel()
		e, id := vanishedRepair(t, `'n1'`, []repair.Action{action(repair.ActionUpdate, "")})
		task := e.Node("n1").Wait(t, id)
		require.Equal(t, sqlapi.StatusFailed, task.Status, "it may have committed: a person looks first")
		require.Contains(t, *task.Error, "agent vanished-agent stopped while running this task (attempt 1 of 3)")
		require.EqualValues(t, 1, e.scalar("n1", `SELECT count(*) FROM ace.repair_actions WHERE task_id = $1`, id), "its record stays")
	})
}

// requireRequeuedAndRepaired checks that a recovered repair ran again, with nothing left of the
// vanished attempt.
func requireRequeuedAndRepaired(e *diffEnv, id uuid.UUID) {
	e.t.Helper()
	task := e.Node("n1").Wait(e.t, id)
	require.Equal(e.t, sqlapi.StatusCompleted, task.Status, "error: %s", errorOf(task))
	require.Equal(e.t, 2, task.Attempts, "the vanished attempt counts")
	require.Equal(e.t, "x1", e.scalar("n2", `SELECT x FROM v WHERE id = 1`))
	require.EqualValues(e.t, 2, e.scalar("n1", `SELECT min(attempt) FROM ace.repair_actions WHERE task_id = $1`, id),
		"the vanished attempt's actions are gone")
}
