package cdc

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
)

// Reconnect backoff: doubling from minBackoff to maxBackoff, back to minBackoff after a
// connection that streamed.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// maxRefusals is how many times the server may refuse the stream at the same confirmed
// position (with backoff between) before Run gives up with ErrDecoding.
const maxRefusals = 3

// refusalCount counts the server's refusals of the stream (errors that are not about the
// connection) at one confirmed position.
type refusalCount struct {
	at pglogrepl.LSN
	n  int
}

// note counts err if it is a refusal and returns the count at this position.
func (r *refusalCount) note(err error, at pglogrepl.LSN) int {
	if !serverRefusal(err) {
		r.n = 0
		return 0
	}
	if r.n == 0 || r.at != at {
		r.at, r.n = at, 0
	}
	r.n++
	return r.n
}

// errRestart ends a session so that Run starts the next one at once, with the new publications.
var errRestart = errors.New("restart with new publications")

// errWoken is the cause of a receive cancelled by Poke or SetPublications.
var errWoken = errors.New("woken")

// slotName is what PostgreSQL accepts as a slot name; START_REPLICATION takes it unquoted.
var slotName = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// Stream is one consumer of a logical replication slot. Run streams; Poke, SetPublications and
// Status are safe from any goroutine.
type Stream struct {
	opts Options
	h    Handler

	// signal wakes a Run waiting for publications; the flags say why.
	signal chan struct{}

	mu          sync.Mutex
	pubs        []string
	pubsChanged bool
	pokeWanted  bool
	wake        context.CancelCauseFunc // interrupts the receive in progress; nil when none
	status      Status
}

// NewStream makes a stream of the slot in opts to h. It connects only in Run.
func NewStream(opts Options, h Handler) *Stream {
	opts = opts.withDefaults()
	return &Stream{opts: opts, h: h, pubs: opts.Publications, signal: make(chan struct{}, 1)}
}

// Run streams until ctx ends (returns nil then) or a permanent error: ErrSlotMissing (the slot
// does not exist), ErrSlotInvalidated (the slot was invalidated, e.g. by
// max_slot_wal_keep_size: wal_status 'lost'), ErrPublicationMissing (a publication that does
// not exist), ErrDecoding (the server refused the stream maxRefusals times at the same
// position with an error that is not about the connection, e.g. a row filter that raises), a
// slot that is not a pgoutput slot of the connection's database, an invalid connection string or slot name, or an error of the Handler (wrapped; the transactions it was
// given are redelivered by the next Run). Transient failures (connection lost, server restart,
// the slot active for another consumer) are retried with capped exponential backoff, resuming
// from the confirmed position; it records the last error for Status. While the publication list
// is empty, Run waits for SetPublications without connecting.
func (s *Stream) Run(ctx context.Context) error {
	if !slotName.MatchString(s.opts.Slot) {
		return fmt.Errorf("cdc: invalid slot name %q (lower case letters, digits and underscores)", s.opts.Slot)
	}
	if _, err := replicationConfig(s.opts.ConnString); err != nil {
		return err
	}
	backoff := minBackoff
	var refusals refusalCount
	for {
		streamed, err := s.session(ctx)
		s.setConnected(false)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errRestart):
			backoff = minBackoff
			continue
		}
		if refusals.note(err, s.Status().Confirmed) >= maxRefusals {
			err = permanent(fmt.Errorf("%w %d times at %s, the same way each time: %w", ErrDecoding, maxRefusals, s.Status().Confirmed, err))
		}
		s.recordError(err)
		if isPermanent(err) {
			return fmt.Errorf("cdc: slot %s: %w", s.opts.Slot, err)
		}
		s.logRetry(err, backoff)
		if streamed {
			// Only a session that confirmed something resets the backoff: one that merely
			// connected and failed again must not reconnect in a tight loop.
			backoff = minBackoff
		}
		if sleep(ctx, backoff) != nil {
			return nil
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (s *Stream) logRetry(err error, backoff time.Duration) {
	if slotBusy(err) {
		s.opts.Log.Warn("cdc: the replication slot is in use by another consumer; the agent must be its only consumer",
			"slot", s.opts.Slot, "retry_in", backoff, "err", err)
		return
	}
	s.opts.Log.Warn("cdc: replication stream failed; reconnecting", "slot", s.opts.Slot, "retry_in", backoff, "err", err)
}

// replicationConfig parses the node's connection string and asks for a logical replication
// connection.
func replicationConfig(connString string) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(connString)
	if err != nil {
		return nil, fmt.Errorf("cdc: parse connection string: %w", err)
	}
	cfg.RuntimeParams["replication"] = "database"
	return cfg, nil
}

// session runs one replication connection; streamed reports whether it confirmed a position
// past where it started, which resets the backoff.
func (s *Stream) session(ctx context.Context) (streamed bool, err error) {
	pubs := s.takePublications()
	if len(pubs) == 0 {
		return false, s.waitForPublications(ctx)
	}
	cfg, err := replicationConfig(s.opts.ConnString)
	if err != nil {
		return false, err
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return false, fmt.Errorf("connect for replication: %w", err)
	}
	defer closeConn(conn)
	ss, err := s.start(ctx, conn, pubs)
	if err != nil {
		return false, err
	}
	err = ss.loop(ctx)
	return ss.streamed, err
}

func closeConn(conn *pgconn.PgConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = conn.Close(ctx) // the connection is being abandoned; its error changes nothing
}

// start checks the slot and publications and starts streaming from the confirmed position:
// the later of what this Stream confirmed and what the slot says, so the status updates never
// move the slot's confirmed_flush_lsn back.
func (s *Stream) start(ctx context.Context, conn *pgconn.PgConn, pubs []string) (*session, error) {
	info, err := checkSlot(ctx, conn, s.opts.Slot)
	if err != nil {
		return nil, err
	}
	if err := checkPublications(ctx, conn, pubs); err != nil {
		return nil, err
	}
	from := max(s.Status().Confirmed, info.confirmed)
	err = pglogrepl.StartReplication(ctx, conn, s.opts.Slot, from, pglogrepl.StartReplicationOptions{
		Mode: pglogrepl.LogicalReplication, PluginArgs: pluginArgs(pubs)})
	if err != nil {
		return nil, classify(fmt.Errorf("start replication from %s: %w", from, err))
	}
	s.setStreaming(pubs, from)
	return newSession(s, conn, from), nil
}

// pluginArgs are pgoutput's options: protocol 1 and the publications, each a double-quoted
// identifier (pgoutput splits the list as identifiers) inside one single-quoted string.
func pluginArgs(pubs []string) []string {
	ids := make([]string, len(pubs))
	for i, p := range pubs {
		ids[i] = `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
	}
	list := strings.Join(ids, ",")
	return []string{"proto_version '1'", "publication_names '" + strings.ReplaceAll(list, "'", "''") + "'"}
}

// waitForPublications waits, unconnected, until SetPublications gives a list.
func (s *Stream) waitForPublications(ctx context.Context) error {
	for {
		s.mu.Lock()
		n := len(s.pubs)
		s.mu.Unlock()
		if n > 0 {
			return errRestart
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.signal:
		}
	}
}

// Poke asks the server for a keepalive now (standby status update with ReplyRequested), so that
// an idle stream learns the server's WAL end promptly and reports it through
// Apply(ctx, nil, walEnd). Non-blocking; safe from any goroutine.
func (s *Stream) Poke() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pokeWanted = true
	s.notifyLocked()
}

// SetPublications changes the publication list: the stream restarts from its confirmed position
// with the new list, once everything delivered so far has been applied and confirmed. Safe
// from any goroutine.
//
// On PostgreSQL 15 pgoutput looks publications up as the catalog was at each change it
// decodes, so a new session must not start before the new publications existed. The stream
// therefore reads the node's WAL position L when it takes the new list, keeps streaming with the
// old list until it has confirmed L, and only then restarts. Changes of a newly published table
// are delivered from that restart position on (Status().StreamStart with the new
// Status().Publications), not from when it was published.
func (s *Stream) SetPublications(pubs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pubs = slices.Clone(pubs)
	s.pubsChanged = true
	s.notifyLocked()
}

// notifyLocked wakes whatever Run is waiting on: a receive, or the wait for publications.
func (s *Stream) notifyLocked() {
	if s.wake != nil {
		s.wake(errWoken)
	}
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// takePublications returns the list a new session streams, and clears the change flag.
func (s *Stream) takePublications() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pubsChanged = false
	return slices.Clone(s.pubs)
}

// armWake installs the receive's cancel function unless a wake-up is already waiting, in which
// case the session should act on it instead of receiving.
func (s *Stream) armWake(wake context.CancelCauseFunc) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pokeWanted || s.pubsChanged {
		return false
	}
	s.wake = wake
	return true
}

func (s *Stream) disarmWake() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wake = nil
}

// takeSignals returns and clears the pending Poke and publication change.
func (s *Stream) takeSignals() (poke, pubsChanged bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	poke, pubsChanged = s.pokeWanted, s.pubsChanged
	s.pokeWanted, s.pubsChanged = false, false
	return poke, pubsChanged
}

// Status reports the last confirmed (applied) LSN, the last server WAL end seen, whether
// connected, and the last error.
func (s *Stream) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Publications = slices.Clone(st.Publications)
	return st
}

func (s *Stream) setStreaming(pubs []string, from pglogrepl.LSN) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.Connected, s.status.Publications, s.status.StreamStart = true, pubs, from
	s.status.Confirmed = max(s.status.Confirmed, from)
}

func (s *Stream) setConnected(c bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.Connected = c
}

func (s *Stream) setConfirmed(lsn pglogrepl.LSN) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.Confirmed = max(s.status.Confirmed, lsn)
}

func (s *Stream) noteServerWALEnd(lsn pglogrepl.LSN) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.ServerWALEnd = max(s.status.ServerWALEnd, lsn)
}

func (s *Stream) recordError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status.LastError, s.status.LastErrorAt = err, time.Now()
}
