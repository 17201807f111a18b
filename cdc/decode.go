package cdc

import (
	"fmt"

	"github.com/jackc/pglogrepl"
)

// decoder turns pgoutput messages into committed transactions. It lives for one replication
// connection: the server sends a Relation message before a relation's first change on every new
// connection, so starting each connection with an empty cache is always safe.
type decoder struct {
	rels map[uint32]*Relation
	txn  *Txn // the transaction being received, between Begin and Commit
	size int  // bytes of values in txn.Changes
}

func newDecoder() *decoder { return &decoder{rels: map[uint32]*Relation{}} }

// inTxn reports whether a transaction has begun and not yet committed.
func (d *decoder) inTxn() bool { return d.txn != nil }

// decode takes one pgoutput message and returns the transaction it completed, if any.
func (d *decoder) decode(data []byte) (*Txn, error) {
	msg, err := parse(data)
	if err != nil {
		return nil, err
	}
	switch m := msg.(type) {
	case *pglogrepl.RelationMessage:
		d.rels[m.RelationID] = relation(m)
	case *pglogrepl.BeginMessage:
		if d.txn != nil {
			return nil, fmt.Errorf("decode pgoutput: Begin of xid %d inside xid %d", m.Xid, d.txn.Xid)
		}
		d.txn = &Txn{Xid: m.Xid, CommitLSN: m.FinalLSN, CommitTime: m.CommitTime}
	case *pglogrepl.CommitMessage:
		return d.commit(m)
	case *pglogrepl.InsertMessage:
		return nil, d.add(m.RelationID, Insert, m.Tuple, nil)
	case *pglogrepl.UpdateMessage:
		return nil, d.add(m.RelationID, Update, m.NewTuple, m.OldTuple)
	case *pglogrepl.DeleteMessage:
		return nil, d.add(m.RelationID, Delete, nil, m.OldTuple)
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			if err := d.add(id, Truncate, nil, nil); err != nil {
				return nil, err
			}
		}
	default:
		// Origin, Type and logical decoding messages carry nothing the handler needs.
	}
	return nil, nil
}

// parse is pglogrepl.Parse, which indexes the buffer without bounds checks: a malformed
// message becomes an error instead of a panic of the agent.
func parse(data []byte) (msg pglogrepl.Message, err error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("decode pgoutput: empty message")
	}
	defer func() {
		if r := recover(); r != nil {
			msg, err = nil, fmt.Errorf("decode pgoutput message %q: malformed: %v", data[0], r)
		}
	}()
	msg, err = pglogrepl.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("decode pgoutput message %q: %w", data[0], err)
	}
	return msg, nil
}

func relation(m *pglogrepl.RelationMessage) *Relation {
	r := &Relation{ID: m.RelationID, Namespace: m.Namespace, Name: m.RelationName,
		Columns: make([]string, len(m.Columns)), Key: make([]bool, len(m.Columns))}
	for i, c := range m.Columns {
		r.Columns[i] = c.Name
		r.Key[i] = c.Flags&1 != 0
	}
	return r
}

func (d *decoder) commit(m *pglogrepl.CommitMessage) (*Txn, error) {
	if d.txn == nil {
		return nil, fmt.Errorf("decode pgoutput: Commit at %s without Begin", m.CommitLSN)
	}
	t := d.txn
	d.txn, d.size = nil, 0
	t.CommitLSN, t.EndLSN, t.CommitTime = m.CommitLSN, m.TransactionEndLSN, m.CommitTime
	return t, nil
}

func (d *decoder) add(relID uint32, kind Kind, newTuple, oldTuple *pglogrepl.TupleData) error {
	if d.txn == nil {
		return fmt.Errorf("decode pgoutput: %s of relation %d outside a transaction", kind, relID)
	}
	rel, ok := d.rels[relID]
	if !ok {
		return fmt.Errorf("decode pgoutput: %s of relation %d before its Relation message", kind, relID)
	}
	c := RowChange{Kind: kind, Rel: rel}
	var err error
	if c.New, err = values(rel, newTuple); err != nil {
		return fmt.Errorf("decode pgoutput: %s of %s.%s: new tuple: %w", kind, rel.Namespace, rel.Name, err)
	}
	if c.Old, err = values(rel, oldTuple); err != nil {
		return fmt.Errorf("decode pgoutput: %s of %s.%s: old tuple: %w", kind, rel.Namespace, rel.Name, err)
	}
	d.txn.Changes = append(d.txn.Changes, c)
	d.size += valuesSize(c.New) + valuesSize(c.Old)
	return nil
}

func valuesSize(vals []Value) int {
	n := 0
	for _, v := range vals {
		n += len(v.Text) + 16
	}
	return n
}

// held is how many changes, and bytes of values, of the transaction being received the
// decoder holds.
func (d *decoder) held() (changes, bytes int) {
	if d.txn == nil {
		return 0, 0
	}
	return len(d.txn.Changes), d.size
}

// takeChunk hands over the changes of the transaction being received so far, as a partial
// transaction, and keeps receiving the rest.
func (d *decoder) takeChunk() Txn {
	chunk := *d.txn
	chunk.Partial = true
	d.txn.Changes, d.size = nil, 0
	return chunk
}

// values aligns a tuple with rel.Columns. Columns the tuple does not carry are Null (pgoutput
// sends every column, with the non-key ones NULL in a key-only tuple, so this is a safeguard).
func values(rel *Relation, td *pglogrepl.TupleData) ([]Value, error) {
	if td == nil {
		return nil, nil
	}
	if len(td.Columns) > len(rel.Columns) {
		return nil, fmt.Errorf("%d values for %d columns", len(td.Columns), len(rel.Columns))
	}
	vals := make([]Value, len(rel.Columns))
	for i := range vals {
		if i >= len(td.Columns) {
			vals[i] = Value{Null: true}
			continue
		}
		switch col := td.Columns[i]; col.DataType {
		case pglogrepl.TupleDataTypeNull:
			vals[i] = Value{Null: true}
		case pglogrepl.TupleDataTypeToast:
			vals[i] = Value{Unchanged: true}
		case pglogrepl.TupleDataTypeText:
			vals[i] = Value{Text: string(col.Data)}
		default:
			return nil, fmt.Errorf("column %s: unexpected tuple data type %q (the stream asks for text)", rel.Columns[i], col.DataType)
		}
	}
	return vals, nil
}
