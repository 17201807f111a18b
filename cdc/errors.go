package cdc

import (
	"errors"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
)

// Permanent errors of Run: retrying cannot help until someone changes the node.
var (
	// ErrSlotMissing: the replication slot does not exist.
	ErrSlotMissing = errors.New("replication slot does not exist")
	// ErrSlotInvalidated: the slot lost WAL it needs (wal_status 'lost', e.g. after
	// max_slot_wal_keep_size); it must be dropped and made again, and what it would have
	// delivered is gone.
	ErrSlotInvalidated = errors.New("replication slot has been invalidated")
	// ErrPublicationMissing: a publication of Options.Publications does not exist.
	ErrPublicationMissing = errors.New("publication does not exist")
	// ErrDecoding: the server refused the stream at the same position again and again, e.g.
	// a publication's row filter that raises on a change: decoding uses the catalog as of the
	// change, so it fails the same way every time.
	ErrDecoding = errors.New("the server failed to decode the stream")
)

// permanentError marks an error Run returns instead of retrying.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanent(err error) error { return &permanentError{err: err} }

func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// classify turns a server error about the slot or the publications into the package's
// sentinel errors (kept in the chain with the server's own message), permanent where retrying
// cannot help. Anything else is returned as is: transient.
func classify(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	msg := strings.ToLower(pgErr.Message + " " + pgErr.Detail)
	switch {
	case pgErr.Code == pgerrcode.UndefinedObject && strings.Contains(msg, "publication"):
		return permanent(errors.Join(ErrPublicationMissing, err))
	case pgErr.Code == pgerrcode.UndefinedObject && strings.Contains(msg, "replication slot"):
		return permanent(errors.Join(ErrSlotMissing, err))
	case pgErr.Code == pgerrcode.ObjectNotInPrerequisiteState &&
		(strings.Contains(msg, "can no longer get changes") || strings.Contains(msg, "has been invalidated")):
		return permanent(errors.Join(ErrSlotInvalidated, err))
	case pgErr.Code == pgerrcode.ObjectNotInPrerequisiteState:
		// E.g. a physical slot, or a slot of another database: a configuration error.
		return permanent(err)
	}
	return err
}

// serverRefusal reports whether err is an error the server sent that is not about the
// connection or the server's resources (SQLSTATE classes 08, 53, 57P, and a slot in use by
// another consumer are transient): repeated at the same position, it will not go away.
func serverRefusal(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || isPermanent(err) {
		return false
	}
	code := pgErr.Code
	return !pgerrcode.IsConnectionException(code) && !pgerrcode.IsInsufficientResources(code) &&
		!serverEndedSession(code) && code != pgerrcode.ObjectInUse
}

// serverEndedSession reports whether code is one of the 57P SQLSTATEs: the server ended the
// session (shutdown, crash, dropped database, idle timeout) or is not accepting connections yet.
func serverEndedSession(code string) bool {
	switch code {
	case pgerrcode.AdminShutdown, pgerrcode.CrashShutdown, pgerrcode.CannotConnectNow,
		pgerrcode.DatabaseDropped, pgerrcode.IdleSessionTimeout:
		return true
	}
	return false
}

// slotBusy reports whether err says another process is consuming the slot.
func slotBusy(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.ObjectInUse
}
