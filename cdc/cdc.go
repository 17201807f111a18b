// Package cdc streams a node's committed row changes from its logical replication slot (pgoutput
// over pglogrepl) to a Handler, and confirms a position to the server only after the Handler has
// durably recorded everything before it.
//
// A Stream holds one replication connection at a time. It decodes pgoutput (protocol version 1)
// into whole committed transactions, hands them to the Handler in batches, and reports to the
// server as flushed only a position the Handler has accepted: the slot's confirmed_flush_lsn
// never passes what the Handler recorded, so a crash anywhere loses nothing (the server resends
// from the slot's position) and the Handler must tolerate redelivery.
package cdc

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pglogrepl"
)

// Kind is what a RowChange did.
type Kind byte

// The kinds of change pgoutput sends.
const (
	Insert   Kind = 'I'
	Update   Kind = 'U'
	Delete   Kind = 'D'
	Truncate Kind = 'T'
)

// String is the kind's name.
func (k Kind) String() string {
	switch k {
	case Insert:
		return "INSERT"
	case Update:
		return "UPDATE"
	case Delete:
		return "DELETE"
	case Truncate:
		return "TRUNCATE"
	}
	return "Kind(" + string(rune(k)) + ")"
}

// Value is one column of a tuple in pgoutput's text format.
type Value struct {
	Null      bool
	Unchanged bool // an unchanged TOASTed value pgoutput did not send ('u')
	Text      string
}

// Relation is a table as the stream last described it (pgoutput Relation message). A Relation
// is never modified once a RowChange refers to it: a new Relation message makes a new Relation.
type Relation struct {
	ID        uint32 // pg_class OID
	Namespace string
	Name      string
	Columns   []string // names in the order tuples carry values
	Key       []bool   // pgoutput's flag: column is part of the replica identity
}

// RowChange is one row change. New is the new tuple (Insert, Update); Old is the old tuple or old
// key (Delete; Update only when pgoutput sent one, i.e. the key changed or REPLICA IDENTITY
// FULL). Both are aligned with Rel.Columns; a column absent from a key-only ('K') tuple is Null.
// Truncate: one RowChange per truncated relation, no tuples.
type RowChange struct {
	Kind Kind
	Rel  *Relation
	New  []Value
	Old  []Value
}

// Txn is one committed transaction.
type Txn struct {
	Xid        uint32
	CommitLSN  pglogrepl.LSN
	EndLSN     pglogrepl.LSN // end of the commit record: the position to confirm once this txn is recorded
	CommitTime time.Time
	Changes    []RowChange
	// Partial: more changes of this transaction follow in a later Apply. A large transaction
	// is handed over in chunks (Options.ChunkChanges, ChunkBytes) so that the stream never holds
	// it whole; a partial transaction is always the last of its Apply, whose upTo then does not
	// pass it. EndLSN is unknown (zero) until the last chunk; CommitLSN and Xid are known from
	// the start (pgoutput sends only committed transactions).
	Partial bool
}

// Handler records what the stream delivers.
type Handler interface {
	// Apply durably records txns (which may be empty) and the fact that every transaction that
	// commits before upTo has now been delivered. The stream confirms upTo to the server (flush
	// position) only after Apply returns nil, so a crash between delivery and Apply loses
	// nothing: the server resends. Apply must be idempotent for redelivered transactions.
	//
	// A transaction may come in chunks (Txn.Partial): the chunks are committed changes, so they
	// may be recorded at once; upTo confirms the transaction only with its last chunk. After a
	// crash the server resends the whole transaction, so the chunks recorded before it come
	// again.
	//
	// Apply runs on the stream's receive loop: while it runs the server hears nothing from the
	// stream, so it should return well within the server's wal_sender_timeout (60s by default),
	// or the server ends the connection and the stream reconnects. An error from Apply ends Run.
	Apply(ctx context.Context, txns []Txn, upTo pglogrepl.LSN) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, txns []Txn, upTo pglogrepl.LSN) error

// Apply calls f.
func (f HandlerFunc) Apply(ctx context.Context, txns []Txn, upTo pglogrepl.LSN) error {
	return f(ctx, txns, upTo)
}

// Options configures a Stream.
type Options struct {
	ConnString     string        // an ordinary libpq/pgx connection string of the node; the stream adds replication=database
	Slot           string        // logical slot name (plugin pgoutput)
	Publications   []string      // publication_names; must be non-empty to stream
	StatusInterval time.Duration // how often to send standby status updates (default 10s)
	BatchDelay     time.Duration // the longest a delivered txn waits before Apply (default 100ms)
	BatchChanges   int           // Apply once this many changes are pending (default 5000)
	ChunkChanges   int           // hand a transaction over in chunks of this many changes (default 10000)
	ChunkBytes     int           // or of this many bytes of values, whichever comes first (default 16 MiB)
	Log            *slog.Logger  // optional
}

// Defaults of Options.
const (
	DefaultStatusInterval = 10 * time.Second
	DefaultBatchDelay     = 100 * time.Millisecond
	DefaultBatchChanges   = 5000
	DefaultChunkChanges   = 10_000
	DefaultChunkBytes     = 16 << 20
)

func (o Options) withDefaults() Options {
	if o.StatusInterval <= 0 {
		o.StatusInterval = DefaultStatusInterval
	}
	if o.BatchDelay <= 0 {
		o.BatchDelay = DefaultBatchDelay
	}
	if o.BatchChanges <= 0 {
		o.BatchChanges = DefaultBatchChanges
	}
	if o.ChunkChanges <= 0 {
		o.ChunkChanges = DefaultChunkChanges
	}
	if o.ChunkBytes <= 0 {
		o.ChunkBytes = DefaultChunkBytes
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	o.Publications = append([]string(nil), o.Publications...)
	return o
}

// Status is a snapshot of a Stream's progress.
type Status struct {
	Confirmed    pglogrepl.LSN // the last position Apply recorded and the stream confirmed (or the slot's, before the first Apply)
	ServerWALEnd pglogrepl.LSN // the last server WAL end seen (keepalive or XLogData header)
	Connected    bool          // a replication connection is streaming now
	Publications []string      // the publications of the current (or last) connection
	StreamStart  pglogrepl.LSN // where the current (or last) connection started streaming
	LastError    error         // the last error the stream met, retried or not; nil if none yet
	LastErrorAt  time.Time
}
