package cdc_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/cdc"
)

func TestChanges(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.exec(`CREATE TABLE t (a int, b text, c int, d text, PRIMARY KEY (a, b))`)
	e.exec(`CREATE TABLE other (id int PRIMARY KEY)`)
	e.exec(`CREATE PUBLICATION p FOR TABLE t`)
	e.ensureSlot()
	rec := &recorder{}
	r := e.run(e.options("p"), rec)

	e.exec(`INSERT INTO t VALUES (1, 'x', 10, NULL)`)
	e.exec(`UPDATE t SET c = 11 WHERE a = 1`)
	e.exec(`UPDATE t SET a = 2 WHERE a = 1`)
	e.exec(`INSERT INTO other VALUES (1)`)
	e.exec(`DELETE FROM t WHERE a = 2`)
	e.exec(`INSERT INTO t SELECT 3, 'y', 30, string_agg(md5(i::text), '') FROM generate_series(1, 400) i`)
	e.exec(`UPDATE t SET c = 31 WHERE a = 3`) // d is TOASTed and unchanged
	e.exec(`BEGIN; INSERT INTO t VALUES (4, 'z', 40, 'four'); INSERT INTO other VALUES (2); INSERT INTO t VALUES (5, 'z', NULL, ''); COMMIT`)
	e.exec(`TRUNCATE t`)
	changes := rec.waitChanges(t, 9)
	require.NoError(t, r.stop())

	t.Run("relation", func(t *testing.T) {
		rel := changes[0].Rel
		require.Equal(t, "public", rel.Namespace)
		require.Equal(t, "t", rel.Name)
		require.Equal(t, []string{"a", "b", "c", "d"}, rel.Columns)
		require.Equal(t, []bool{true, true, false, false}, rel.Key)
		for _, c := range changes {
			require.Equal(t, "t", c.Rel.Name, "the unpublished table sends nothing")
		}
	})
	t.Run("kinds and values", func(t *testing.T) {
		want := []struct {
			kind     cdc.Kind
			new, old []cdc.Value
		}{
			{cdc.Insert, []cdc.Value{text("1"), text("x"), text("10"), null}, nil},
			{cdc.Update, []cdc.Value{text("1"), text("x"), text("11"), null}, nil},
			{cdc.Update, []cdc.Value{text("2"), text("x"), text("11"), null}, []cdc.Value{text("1"), text("x"), null, null}},
			{cdc.Delete, nil, []cdc.Value{text("2"), text("x"), null, null}},
			{cdc.Insert, nil, nil}, // the TOASTed value: checked below
			{cdc.Update, []cdc.Value{text("3"), text("y"), text("31"), unchanged}, nil},
			{cdc.Insert, []cdc.Value{text("4"), text("z"), text("40"), text("four")}, nil},
			{cdc.Insert, []cdc.Value{text("5"), text("z"), null, text("")}, nil},
			{cdc.Truncate, nil, nil},
		}
		require.Len(t, changes, len(want))
		for i, w := range want {
			require.Equal(t, w.kind, changes[i].Kind, "change %d", i)
			if i == 4 {
				require.Len(t, changes[i].New[3].Text, 400*32)
				continue
			}
			require.Equal(t, w.new, changes[i].New, "change %d new", i)
			require.Equal(t, w.old, changes[i].Old, "change %d old", i)
		}
	})
	t.Run("transactions in commit order", func(t *testing.T) {
		txns := rec.txns()
		require.Len(t, txns, 8) // the two-insert transaction is one
		require.Len(t, txns[6].Changes, 2)
		for i, tx := range txns {
			require.Greater(t, tx.EndLSN, tx.CommitLSN)
			require.NotZero(t, tx.Xid)
			require.WithinDuration(t, time.Now(), tx.CommitTime, time.Minute)
			if i > 0 {
				require.Greater(t, tx.CommitLSN, txns[i-1].EndLSN-1)
			}
		}
	})
}

func TestColumnList(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.exec(`CREATE TABLE t (id int PRIMARY KEY, v text)`)
	// An awkward name: a comma, quotes and capitals, which publication_names must quote.
	e.exec(`CREATE PUBLICATION "Key, ""only"" 'p'" FOR TABLE t (id)`)
	e.ensureSlot()
	rec := &recorder{}
	r := e.run(e.options(`Key, "only" 'p'`), rec)
	e.exec(`INSERT INTO t VALUES (7, 'seven')`)
	e.exec(`UPDATE t SET v = 'SEVEN'`)
	e.exec(`DELETE FROM t`)
	changes := rec.waitChanges(t, 3)
	require.NoError(t, r.stop())
	require.Equal(t, []string{"id"}, changes[0].Rel.Columns)
	require.Equal(t, []bool{true}, changes[0].Rel.Key)
	require.Equal(t, []cdc.Value{text("7")}, changes[0].New)
	require.Equal(t, cdc.Update, changes[1].Kind)
	require.Equal(t, []cdc.Value{text("7")}, changes[1].New)
	require.Equal(t, []cdc.Value{text("7")}, changes[2].Old)
}

func TestCrashSafety(t *testing.T) {
	t.Parallel()
	e := setupPublished(t, nil)
	e.ensureSlot()
	start := e.confirmedFlush()
	e.exec(`INSERT INTO t VALUES (1)`)

	t.Run("handler error", func(t *testing.T) {
		boom := errors.New("boom")
		r := e.run(e.options("p"), &recorder{fail: boom})
		err := r.wait(t)
		require.ErrorIs(t, err, boom)
		require.Equal(t, start, e.confirmedFlush())
	})
	t.Run("cancelled during Apply", func(t *testing.T) {
		rec := &recorder{block: true}
		r := e.run(e.options("p"), rec)
		require.Eventually(t, func() bool { return rec.called() > 0 }, 10*time.Second, 10*time.Millisecond)
		require.NoError(t, r.stop())
		require.Equal(t, start, e.confirmedFlush())
	})
	var first cdc.Txn
	t.Run("redelivered, then confirmed", func(t *testing.T) {
		rec := &recorder{}
		r := e.run(e.options("p"), rec)
		rec.waitChanges(t, 1)
		first = rec.txns()[0]
		require.Equal(t, []cdc.Value{text("1")}, first.Changes[0].New)
		require.Eventually(t, func() bool { return e.confirmedFlush() >= first.EndLSN }, 5*time.Second, 10*time.Millisecond)
		require.GreaterOrEqual(t, r.Status().Confirmed, first.EndLSN)
		require.NoError(t, r.stop())
	})
	t.Run("not redelivered once confirmed", func(t *testing.T) {
		rec := &recorder{}
		r := e.run(e.options("p"), rec)
		e.exec(`INSERT INTO t VALUES (2)`)
		changes := rec.waitChanges(t, 1)
		require.NoError(t, r.stop())
		require.Len(t, changes, 1)
		require.Equal(t, []cdc.Value{text("2")}, changes[0].New)
		require.NotEqual(t, first.Xid, rec.txns()[0].Xid)
	})
}

func TestIdlePoke(t *testing.T) {
	t.Parallel()
	e := setupPublished(t, nil)
	e.exec(`CREATE TABLE unpublished (id int PRIMARY KEY)`)
	e.ensureSlot()
	rec := &recorder{}
	opts := e.options("p")
	opts.StatusInterval = time.Minute // only Poke (or the server) makes the stream speak
	r := e.run(opts, rec)
	r.waitConnected(t)

	// A committed write, flushed at commit, with the WAL position taken before its commit.
	ctx := context.Background()
	tx, err := e.pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SET LOCAL synchronous_commit = on`)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `INSERT INTO unpublished VALUES (1)`)
	require.NoError(t, err)
	var lsn pglogrepl.LSN
	require.NoError(t, tx.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn))
	require.NoError(t, tx.Commit(ctx))

	r.Poke()
	rec.waitIdle(t, lsn, 3*time.Second)
	require.Empty(t, rec.txns())
	require.Eventually(t, func() bool { return e.confirmedFlush() >= lsn }, 3*time.Second, 10*time.Millisecond)
	st := r.Status()
	require.GreaterOrEqual(t, st.Confirmed, lsn)
	require.GreaterOrEqual(t, st.ServerWALEnd, lsn)
	require.NoError(t, r.stop())
}

// A Poke is answered at once: what the stream has received, and the position the server's reply
// gives, are applied without waiting for BatchDelay, for a diff waits on it.
func TestPokeAppliesAtOnce(t *testing.T) {
	t.Parallel()
	e := setupPublished(t, nil)
	e.exec(`CREATE TABLE unpublished (id int PRIMARY KEY)`)
	e.ensureSlot()
	rec := &recorder{}
	opts := e.options("p")
	opts.StatusInterval, opts.BatchDelay = time.Hour, time.Hour // only a Poke can make it apply
	r := e.run(opts, rec)
	r.waitConnected(t)
	e.exec(`INSERT INTO t VALUES (1)`)
	e.exec(`INSERT INTO unpublished VALUES (1)`)
	var lsn pglogrepl.LSN
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn))
	e.exec(`SELECT pg_switch_wal()`) // the insert position is flushed, so the server can report it
	require.Eventually(t, func() bool {
		r.Poke()
		return r.Status().Confirmed >= lsn
	}, 15*time.Second, 100*time.Millisecond, "a poked stream confirms the server's position without waiting an hour")
	require.Len(t, rec.changes(), 1, "the pending transaction applied with it")
	require.NoError(t, r.stop())
}

func TestSetPublications(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	e.exec(`CREATE TABLE t1 (id int PRIMARY KEY)`)
	e.exec(`CREATE TABLE t2 (id int PRIMARY KEY)`)
	e.exec(`CREATE PUBLICATION p1 FOR TABLE t1`)
	e.ensureSlot()
	rec := &recorder{}
	r := e.run(e.options("p1"), rec)
	e.exec(`INSERT INTO t1 VALUES (1)`)
	rec.waitChanges(t, 1)

	// A change of t1 just before p2 exists: a stream restarted before it with p2 in its list
	// would fail on PostgreSQL 15 (publication "p2" does not exist, in the historic catalog).
	e.exec(`BEGIN; INSERT INTO t1 VALUES (2); CREATE PUBLICATION p2 FOR TABLE t2; COMMIT`)
	r.SetPublications([]string{"p1", "p2"})
	require.Eventually(t, func() bool {
		st := r.Status()
		return st.Connected && len(st.Publications) == 2
	}, 15*time.Second, 10*time.Millisecond)
	e.exec(`INSERT INTO t2 VALUES (10)`)
	e.exec(`INSERT INTO t1 VALUES (3)`)
	changes := rec.waitChanges(t, 4)
	require.NoError(t, r.stop())
	var got []string
	for _, c := range changes {
		got = append(got, c.Rel.Name+":"+c.New[0].Text)
	}
	require.Equal(t, []string{"t1:1", "t1:2", "t2:10", "t1:3"}, got)
	require.NoError(t, r.Status().LastError)
}

func TestSlotMissing(t *testing.T) {
	t.Parallel()
	e := setupPublished(t, nil)

	t.Run("never made", func(t *testing.T) {
		r := e.run(e.options("p"), &recorder{})
		err := r.wait(t)
		require.ErrorIs(t, err, cdc.ErrSlotMissing)
		require.ErrorIs(t, r.Status().LastError, cdc.ErrSlotMissing)
	})
	t.Run("dropped", func(t *testing.T) {
		e.ensureSlot()
		e.streamRow(1)
		require.NoError(t, cdc.DropSlot(context.Background(), e.dsn, e.slot))
		r := e.run(e.options("p"), &recorder{})
		require.ErrorIs(t, r.wait(t), cdc.ErrSlotMissing)
	})
	t.Run("server error", func(t *testing.T) {
		require.ErrorIs(t, startReplication(t, e), cdc.ErrSlotMissing)
	})
	t.Run("publication missing", func(t *testing.T) {
		_, err := cdc.EnsureSlot(context.Background(), e.dsn, e.slot)
		require.NoError(t, err)
		r := e.run(e.options("p", "nope"), &recorder{})
		err = r.wait(t)
		require.ErrorIs(t, err, cdc.ErrPublicationMissing)
		require.ErrorContains(t, err, "nope")
	})
	t.Run("publication dropped while streaming", func(t *testing.T) {
		rec := &recorder{}
		r := e.run(e.options("p"), rec)
		e.exec(`INSERT INTO t VALUES (2)`)
		rec.waitChanges(t, 1)
		e.exec(`DROP PUBLICATION p`)
		e.exec(`INSERT INTO t VALUES (3)`)
		require.ErrorIs(t, r.wait(t), cdc.ErrPublicationMissing)
	})
}

func TestSlotInUse(t *testing.T) {
	t.Parallel()
	e := setupPublished(t, nil)
	e.ensureSlot()
	r1 := e.run(e.options("p"), &recorder{})
	r1.waitConnected(t)
	r2 := e.run(e.options("p"), &recorder{})
	require.Eventually(t, func() bool {
		err := r2.Status().LastError
		return err != nil && !r2.Status().Connected
	}, 10*time.Second, 10*time.Millisecond)
	require.ErrorContains(t, r2.Status().LastError, "is active for PID")

	err := cdc.DropSlot(context.Background(), e.dsn, e.slot)
	require.ErrorContains(t, err, "in use")
	require.NoError(t, r1.stop())
	require.NoError(t, r2.stop())
}

func TestSlotInvalidated(t *testing.T) {
	t.Parallel()
	e := setupPublished(t, localpgStart(t, map[string]string{"max_slot_wal_keep_size": "1MB"}))
	e.ensureSlot()
	e.streamRow(1)

	require.Eventually(t, func() bool {
		e.exec(`INSERT INTO t SELECT max(id) + 1 FROM t`)
		e.exec(`SELECT pg_switch_wal()`)
		e.exec(`CHECKPOINT`)
		var status string
		require.NoError(t, e.pool.QueryRow(context.Background(),
			`SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1`, e.slot).Scan(&status))
		return status == "lost"
	}, time.Minute, 10*time.Millisecond)

	t.Run("Run", func(t *testing.T) {
		r := e.run(e.options("p"), &recorder{})
		require.ErrorIs(t, r.wait(t), cdc.ErrSlotInvalidated)
	})
	t.Run("server error", func(t *testing.T) {
		require.ErrorIs(t, startReplication(t, e), cdc.ErrSlotInvalidated)
	})
}

func TestReconnect(t *testing.T) {
	t.Parallel()
	e := setupPublished(t, nil)
	e.ensureSlot()
	rec := &recorder{}
	r := e.run(e.options("p"), rec)
	e.exec(`INSERT INTO t VALUES (1)`)
	rec.waitChanges(t, 1)

	e.exec(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1`, e.slot)
	require.Eventually(t, func() bool { return r.Status().LastError != nil }, 10*time.Second, 10*time.Millisecond)
	e.exec(`INSERT INTO t VALUES (2)`)
	changes := rec.waitChanges(t, 2)
	r.waitConnected(t)
	require.NoError(t, r.stop())
	require.Len(t, changes, 2, "nothing lost, nothing confirmed delivered twice")
	require.Equal(t, "2", changes[1].New[0].Text)
}

func TestBatching(t *testing.T) {
	t.Parallel()
	e := setupPublished(t, nil)
	e.ensureSlot()
	rec := &recorder{}
	opts := e.options("p")
	opts.BatchDelay, opts.BatchChanges = time.Hour, 10
	r := e.run(opts, rec)
	e.exec(`INSERT INTO t VALUES (0)`)
	time.Sleep(time.Second)
	require.Zero(t, rec.called(), "one change waits for the batch")
	e.exec(`INSERT INTO t SELECT generate_series(1, 9)`)
	changes := rec.waitChanges(t, 10)
	require.NoError(t, r.stop())
	require.Len(t, changes, 10)
	require.Equal(t, 1, rec.called(), "both transactions in one Apply")
	require.Len(t, rec.txns(), 2)
}

func TestSlotLifecycle(t *testing.T) {
	t.Parallel()
	e := setup(t, nil)
	ctx := context.Background()
	slotCount := func() (n int) {
		require.NoError(t, e.pool.QueryRow(ctx,
			`SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1 AND plugin = 'pgoutput' AND NOT temporary`, e.slot).Scan(&n))
		return n
	}
	created, err := cdc.EnsureSlot(ctx, e.dsn, e.slot)
	require.NoError(t, err)
	require.True(t, created)
	created, err = cdc.EnsureSlot(ctx, e.dsn, e.slot)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, 1, slotCount())

	require.NoError(t, cdc.DropSlot(ctx, e.dsn, e.slot))
	require.NoError(t, cdc.DropSlot(ctx, e.dsn, e.slot))
	require.Zero(t, slotCount())

	t.Run("physical slot of the same name", func(t *testing.T) {
		e.exec(`SELECT pg_create_physical_replication_slot($1)`, e.slot)
		_, err := cdc.EnsureSlot(ctx, e.dsn, e.slot)
		require.ErrorContains(t, err, "not pgoutput")
		require.NoError(t, cdc.DropSlot(ctx, e.dsn, e.slot))
	})
}
