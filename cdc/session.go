package cdc

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// restartPoll is how often a session waiting to restart for new publications asks the server
// for its position.
const restartPoll = 200 * time.Millisecond

// session is one replication connection's receive loop. Everything here runs on Run's
// goroutine: the connection is not safe for concurrent use.
type session struct {
	s    *Stream
	conn *pgconn.PgConn
	dec  *decoder

	pending        []Txn         // committed, not yet applied
	pendingChanges int           // changes in pending
	batchDue       time.Time     // when pending must be applied; zero when none
	idleW          pglogrepl.LSN // highest server WAL end seen between transactions
	idleDue        time.Time     // when idleW must be applied; zero when it is not ahead
	confirmed      pglogrepl.LSN // what Apply recorded: the only position ever reported
	nextStatus     time.Time
	replyNow       bool // the server asked for a reply
	pokeNow        bool // send a status update asking for a reply
	pokeAsked      bool // a Poke's reply is awaited: its position is applied without BatchDelay
	restartWanted  bool // the publication list changed
	restartAt      pglogrepl.LSN
	lastRestartAsk time.Time
	start          pglogrepl.LSN // where the session started
	streamed       bool          // the session confirmed a position past start: it made progress
}

func newSession(s *Stream, conn *pgconn.PgConn, from pglogrepl.LSN) *session {
	// The first status update goes out at once: it tells the server where we are.
	return &session{s: s, conn: conn, dec: newDecoder(), confirmed: from, start: from}
}

func (ss *session) opts() *Options { return &ss.s.opts }

func (ss *session) loop(ctx context.Context) error {
	for {
		if err := ss.service(ctx); err != nil {
			return err
		}
		msg, err := ss.receive(ctx)
		if err != nil {
			return err
		}
		if msg == nil {
			continue // deadline or wake-up: time to service
		}
		if err := ss.handle(ctx, msg); err != nil {
			return err
		}
	}
}

// service does what is due between two receives: act on Poke and SetPublications, apply due
// batches, send status updates, restart for new publications.
func (ss *session) service(ctx context.Context) error {
	if poke, pubs := ss.s.takeSignals(); poke || pubs {
		ss.pokeNow = ss.pokeNow || poke
		ss.restartWanted = ss.restartWanted || pubs
	}
	if err := ss.prepareRestart(ctx); err != nil {
		return err
	}
	if err := ss.applyDue(ctx); err != nil {
		return err
	}
	if err := ss.statusDue(); err != nil {
		return err
	}
	if ss.restartAt != 0 && ss.confirmed >= ss.restartAt && !ss.dec.inTxn() && len(ss.pending) == 0 {
		return errRestart
	}
	return nil
}

// prepareRestart reads the WAL position the session must confirm before it restarts with the
// new publications (see SetPublications), and keeps asking the server for its position until
// the stream gets there.
func (ss *session) prepareRestart(ctx context.Context) error {
	if !ss.restartWanted {
		return nil
	}
	if ss.restartAt == 0 {
		l, err := currentWAL(ctx, ss.opts().ConnString)
		if err != nil {
			return fmt.Errorf("restart with new publications: %w", err)
		}
		ss.restartAt = max(l, 1)
	}
	if time.Since(ss.lastRestartAsk) >= restartPoll {
		ss.pokeNow, ss.lastRestartAsk = true, time.Now()
	}
	return nil
}

// applyDue applies the pending transactions once the batch is full or old enough, or the idle
// position once it has waited BatchDelay (so that a busy server's keepalives do not each cost
// an Apply). A pending restart applies at once.
func (ss *session) applyDue(ctx context.Context) error {
	now, urgent := time.Now(), ss.restartAt != 0
	if n := len(ss.pending); n > 0 {
		if urgent || ss.pendingChanges >= ss.opts().BatchChanges || !now.Before(ss.batchDue) {
			return ss.apply(ctx, ss.pending, max(ss.pending[n-1].EndLSN, ss.idleW))
		}
		return nil
	}
	if ss.idleW > ss.confirmed && (urgent || !now.Before(ss.idleDue)) {
		return ss.apply(ctx, nil, ss.idleW)
	}
	return nil
}

// apply hands txns to the Handler and, once it has recorded them, confirms upTo to the server.
func (ss *session) apply(ctx context.Context, txns []Txn, upTo pglogrepl.LSN) error {
	if err := ss.s.h.Apply(ctx, txns, upTo); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return permanent(fmt.Errorf("handler: apply %d transactions up to %s: %w", len(txns), upTo, err))
	}
	ss.confirmed = upTo
	ss.streamed = ss.streamed || upTo > ss.start
	// A new slice, not pending[:0]: the Handler may keep what it was given.
	ss.pending, ss.pendingChanges, ss.batchDue, ss.idleDue = nil, 0, time.Time{}, time.Time{}
	ss.s.setConfirmed(upTo)
	return ss.sendStatus(false)
}

// statusDue sends a standby status update when asked (by the server or Poke) or when
// StatusInterval has passed since the last one.
func (ss *session) statusDue() error {
	switch {
	case ss.pokeNow:
		return ss.sendStatus(true)
	case ss.replyNow || !time.Now().Before(ss.nextStatus):
		return ss.sendStatus(false)
	}
	return nil
}

// sendStatus reports confirmed as written, flushed and applied: never a position the Handler
// has not recorded, whatever has been received.
func (ss *session) sendStatus(replyRequested bool) error {
	err := pglogrepl.SendStandbyStatusUpdate(context.Background(), ss.conn, pglogrepl.StandbyStatusUpdate{
		WALWritePosition: ss.confirmed, WALFlushPosition: ss.confirmed, WALApplyPosition: ss.confirmed,
		ReplyRequested: replyRequested,
	})
	if err != nil {
		return fmt.Errorf("send standby status update at %s: %w", ss.confirmed, err)
	}
	ss.nextStatus = time.Now().Add(ss.opts().StatusInterval)
	ss.replyNow = false
	ss.pokeNow = ss.pokeNow && !replyRequested
	ss.pokeAsked = ss.pokeAsked || replyRequested
	return nil
}

// answerPoke makes what has been received due at once when a keepalive answers a Poke between
// transactions: whoever poked is waiting for the stream to report the server's position, and
// BatchDelay would only make it wait longer. A Poke is rare, so this costs no extra Applies
// under load.
func (ss *session) answerPoke() {
	if !ss.pokeAsked || ss.dec.inTxn() {
		return
	}
	ss.pokeAsked = false
	now := time.Now()
	if len(ss.pending) > 0 {
		ss.batchDue = now
	}
	if ss.idleW > ss.confirmed {
		ss.idleDue = now
	}
}

// deadline is when the next receive must give up so that the session can service what is
// due: a status update, a batch, an idle position, a restart's next question.
func (ss *session) deadline() time.Time {
	d := ss.nextStatus
	if len(ss.pending) > 0 && ss.batchDue.Before(d) {
		d = ss.batchDue
	}
	if ss.idleW > ss.confirmed && !ss.idleDue.IsZero() && ss.idleDue.Before(d) {
		d = ss.idleDue
	}
	if poll := time.Now().Add(restartPoll); ss.restartWanted && poll.Before(d) {
		d = poll
	}
	return d
}

// receive waits for the next message until the deadline or a wake-up from Poke or
// SetPublications, which return a nil message: neither is an error.
func (ss *session) receive(ctx context.Context) (pgproto3.BackendMessage, error) {
	dctx, cancel := context.WithDeadline(ctx, ss.deadline())
	defer cancel()
	wctx, wake := context.WithCancelCause(dctx)
	defer wake(nil)
	if !ss.s.armWake(wake) {
		return nil, nil
	}
	msg, err := ss.conn.ReceiveMessage(wctx)
	ss.s.disarmWake()
	switch {
	case err == nil:
		return msg, nil
	case ctx.Err() != nil:
		return nil, ctx.Err()
	case pgconn.Timeout(err) || context.Cause(wctx) == errWoken:
		return nil, nil
	}
	return nil, fmt.Errorf("receive from the replication connection: %w", err)
}

func (ss *session) handle(ctx context.Context, msg pgproto3.BackendMessage) error {
	switch m := msg.(type) {
	case *pgproto3.CopyData:
		return ss.copyData(ctx, m.Data)
	case *pgproto3.ErrorResponse:
		return classify(fmt.Errorf("replication stream: %w", pgconn.ErrorResponseToPgError(m)))
	case *pgproto3.CopyDone:
		return fmt.Errorf("replication stream: the server ended it")
	case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		return nil
	}
	return fmt.Errorf("replication stream: unexpected %T", msg)
}

func (ss *session) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return fmt.Errorf("replication stream: empty CopyData")
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("replication stream: %w", err)
		}
		ss.sawWALEnd(pkm.ServerWALEnd)
		ss.replyNow = ss.replyNow || pkm.ReplyRequested
		ss.answerPoke()
	case pglogrepl.XLogDataByteID:
		xld, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("replication stream: %w", err)
		}
		txn, err := ss.dec.decode(xld.WALData)
		if err != nil {
			return fmt.Errorf("replication stream at %s: %w", xld.WALStart, err)
		}
		if txn != nil {
			ss.deliver(txn)
		}
		ss.sawWALEnd(xld.ServerWALEnd)
		return ss.handOverChunk(ctx)
	}
	return nil
}

// handOverChunk applies the changes received so far of a large transaction, with what is
// pending before it, once they reach ChunkChanges or ChunkBytes: the stream never holds a
// whole large transaction. The position confirmed is that of the pending transactions only;
// the large one is confirmed with its last part, at its commit. (pgoutput sends a transaction
// only once it has committed, so its changes may be recorded early; after a crash the server
// resends it whole, and the Handler sees its first chunks again.)
func (ss *session) handOverChunk(ctx context.Context) error {
	changes, bytes := ss.dec.held()
	if changes < ss.opts().ChunkChanges && bytes < ss.opts().ChunkBytes {
		return nil
	}
	chunk := ss.dec.takeChunk()
	if chunk.CommitLSN < ss.confirmed {
		return nil // a resent transaction, recorded already
	}
	upTo := max(ss.confirmed, ss.idleW)
	if n := len(ss.pending); n > 0 {
		upTo = max(upTo, ss.pending[n-1].EndLSN)
	}
	return ss.apply(ctx, append(ss.pending, chunk), upTo)
}

// deliver queues a committed transaction for the next Apply. One that ends at or before the
// confirmed position was recorded already (the server may resend it) and is dropped.
func (ss *session) deliver(t *Txn) {
	if t.EndLSN <= ss.confirmed {
		return
	}
	ss.pending = append(ss.pending, *t)
	ss.pendingChanges += len(t.Changes)
	if ss.batchDue.IsZero() {
		ss.batchDue = time.Now().Add(ss.opts().BatchDelay)
	}
}

// sawWALEnd notes the server's WAL end. Between transactions it is a position every transaction
// committing before it has been delivered by (the server sends in commit order, and this
// message came after them), so it may be applied and confirmed; inside a transaction it is not:
// the transaction being received commits after it, and is not complete yet.
func (ss *session) sawWALEnd(w pglogrepl.LSN) {
	ss.s.noteServerWALEnd(w)
	if ss.dec.inTxn() || w <= ss.idleW {
		return
	}
	ss.idleW = w
	if w > ss.confirmed && ss.idleDue.IsZero() {
		ss.idleDue = time.Now().Add(ss.opts().BatchDelay)
	}
}
