package main

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// WaitResult is how late a psql user hears that a task ended: the time from the commit of the
// task's end (when a waiter can first see it) to the return of ace.wait, and of
// ace.follow_submitted (the ending every CALL ace.run_* form shares, after its COMMIT), for
// tasks that end after each of TaskMillis.
type WaitResult struct {
	TaskMillis    []float64 `json:"task_ms"`
	WaitLateMs    []float64 `json:"wait_late_ms"`
	CallLateMs    []float64 `json:"call_late_ms"`
	WaitLateMaxMs float64   `json:"wait_late_max_ms"`
	CallLateMaxMs float64   `json:"call_late_max_ms"`
}

// waitTaskDurations are the tasks' run times measured: quick ones, the 0.34 s mtree diff of
// issue 21, and a few seconds.
var waitTaskDurations = []time.Duration{50 * time.Millisecond, 340 * time.Millisecond, time.Second, 3 * time.Second}

// measureWait measures what ace.wait and the CALL forms add to a task's run time, in a database
// of its own on n1 without an agent: the bench claims each task as an agent does (sqlapi.Claim)
// and completes it after a given time, so the task's end is the agent's own transaction.
func measureWait(ctx context.Context, c *localpg.Cluster, r *Result) error {
	step("measuring how late ace.wait and the CALL forms see a task's end")
	n := c.Nodes[0]
	admin, err := pgx.Connect(ctx, n.DSN("postgres"))
	if err != nil {
		return err
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE benchwait")
	admin.Close(ctx)
	if err != nil {
		return err
	}
	dsn := n.DSN("benchwait")
	waiter, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer waiter.Close(ctx)
	if _, err := sqlapi.Install(ctx, waiter); err != nil {
		return err
	}
	for _, peer := range c.Nodes { // registered for the diff's validation only: nobody runs it
		if err := sqlapi.AddNode(ctx, waiter, sqlapi.RegisteredNode{Name: peer.Name, ConnInfo: peer.DSN("benchwait")}); err != nil {
			return err
		}
	}
	if _, err := waiter.Exec(ctx, `CREATE TABLE public.w (id int PRIMARY KEY)`); err != nil {
		return err
	}
	db, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer db.Close()
	w := &WaitResult{}
	for _, d := range waitTaskDurations {
		waitLate, err := lateBy(ctx, waiter, db, dsn, d, `SELECT 1 FROM ace.wait($1)`)
		if err != nil {
			return err
		}
		callLate, err := lateBy(ctx, waiter, db, dsn, d, `CALL ace.follow_submitted($1, NULL, NULL, NULL)`)
		if err != nil {
			return err
		}
		w.TaskMillis = append(w.TaskMillis, float64(d.Milliseconds()))
		w.WaitLateMs, w.CallLateMs = append(w.WaitLateMs, waitLate), append(w.CallLateMs, callLate)
		step("a task of %v: ace.wait returned %.1f ms and the CALL ending %.1f ms after its end's commit", d, waitLate, callLate)
	}
	w.WaitLateMaxMs, w.CallLateMaxMs = maxOf(w.WaitLateMs), maxOf(w.CallLateMs)
	r.Wait = w
	return nil
}

// lateBy submits a table-diff, claims it as an agent would and completes it after d, while
// waiter runs waitSQL on it; it returns how many milliseconds after the commit of the task's end
// waitSQL returned (the bench and the server share the clock).
func lateBy(ctx context.Context, waiter *pgx.Conn, db *pgxpool.Pool, dsn string, d time.Duration, waitSQL string) (float64, error) {
	id, err := sqlapi.Submit(ctx, waiter, sqlapi.TypeTableDiff, sqlapi.TableDiffArgs{DiffArgs: sqlapi.DiffArgs{TableName: "public.w"}})
	if err != nil {
		return 0, err
	}
	ended := make(chan error, 1)
	go func() { ended <- runFor(ctx, db, dsn, d) }()
	_, err = waiter.Exec(ctx, waitSQL, id)
	returned := time.Now()
	if endErr := <-ended; endErr != nil {
		return 0, fmt.Errorf("end the waited-for task: %w", endErr)
	}
	if err != nil {
		return 0, fmt.Errorf("wait for task %s: %w", id, err)
	}
	return commitLate(ctx, waiter, id, returned)
}

// runFor claims the queued task as an agent does, and completes it after d.
func runFor(ctx context.Context, db *pgxpool.Pool, dsn string, d time.Duration) error {
	lock, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer lock.Close(ctx)
	run, err := sqlapi.Claim(ctx, lock, db, "bench")
	if err != nil {
		return err
	}
	if run == nil {
		return fmt.Errorf("no queued task to claim")
	}
	time.Sleep(d)
	if err := run.Complete(ctx, map[string]any{}); err != nil {
		return err
	}
	return run.Unlock(ctx)
}

// commitLate is how many milliseconds after the commit of task id's end returned is.
func commitLate(ctx context.Context, q *pgx.Conn, id uuid.UUID, returned time.Time) (float64, error) {
	var committed time.Time
	if err := q.QueryRow(ctx, `SELECT pg_xact_commit_timestamp(xmin) FROM ace.tasks WHERE task_id = $1`, id).Scan(&committed); err != nil {
		return 0, fmt.Errorf("read when task %s's end committed: %w", id, err)
	}
	return float64(returned.Sub(committed).Microseconds()) / 1000, nil
}

func maxOf(xs []float64) float64 {
	m := 0.0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// reportWait prints the wait measurements as lines of the bench table.
func reportWait(w *WaitResult) {
	fmt.Printf("ace.wait after a task's end:   %s ms for tasks of %s ms (max %.1f ms)\n",
		fmtMillis(w.WaitLateMs), fmtMillis(w.TaskMillis), w.WaitLateMaxMs)
	fmt.Printf("CALL ace.run_* after the end:  %s ms for tasks of %s ms (max %.1f ms)\n",
		fmtMillis(w.CallLateMs), fmtMillis(w.TaskMillis), w.CallLateMaxMs)
}

func fmtMillis(xs []float64) string {
	s := "["
	for i, x := range xs {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.1f", x)
	}
	return s + "]"
}
