package cdc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ace-agent/ace-agent/engine"
)

// plugin is the output plugin of every slot the stream reads.
const plugin = "pgoutput"

// EnsureSlot creates the logical slot (pgoutput, not temporary) if it does not exist; reports
// whether it created it. A slot of that name made with another plugin is an error.
//
// Create the publications the stream will read before the slot (or before anything is written
// to the tables after the slot's position): PostgreSQL 15 decodes with the catalog as it was at
// each change, and a publication that did not exist yet at a change stops the stream with
// ErrPublicationMissing.
func EnsureSlot(ctx context.Context, connString, slot string) (created bool, err error) {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return false, fmt.Errorf("ensure slot %s: connect: %w", slot, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var existing string
	err = conn.QueryRow(ctx, `SELECT coalesce(plugin, '') FROM pg_replication_slots WHERE slot_name = $1`, slot).Scan(&existing)
	switch {
	case err == nil:
		return false, checkPlugin(slot, existing)
	case !errors.Is(err, pgx.ErrNoRows):
		return false, fmt.Errorf("ensure slot %s: look it up: %w", slot, err)
	}
	_, err = conn.Exec(ctx, `SELECT pg_create_logical_replication_slot($1, $2)`, slot, plugin)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == pgerrcode.DuplicateObject {
		return false, nil // made by someone else since we looked
	}
	if err != nil {
		return false, fmt.Errorf("ensure slot %s: create: %w", slot, err)
	}
	return true, nil
}

func checkPlugin(slot, got string) error {
	if got != plugin {
		return permanent(fmt.Errorf("replication slot %s exists with plugin %q, not %s (a physical slot has none)", slot, got, plugin))
	}
	return nil
}

// dropWait is how long DropSlot waits for the slot's consumer to let go.
const dropWait = 5 * time.Second

// DropSlot drops the slot if it exists. A slot in use by a connection is retried for a few
// seconds (a consumer that was just stopped takes a moment to go), then reported as in use.
func DropSlot(ctx context.Context, connString, slot string) error {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return fmt.Errorf("drop slot %s: connect: %w", slot, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	deadline := time.Now().Add(dropWait)
	for {
		_, err = conn.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, slot)
		if err == nil || !slotBusy(err) || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("drop slot %s: %w", slot, err)
		}
	}
	if slotBusy(err) {
		return fmt.Errorf("drop slot %s: still in use after %s (another consumer holds it; stop it first): %w", slot, dropWait, err)
	}
	if err != nil {
		return fmt.Errorf("drop slot %s: %w", slot, err)
	}
	return nil
}

// slotInfo is what a session checks of its slot before it streams.
type slotInfo struct {
	confirmed pglogrepl.LSN
}

// checkSlot reads the slot on the replication connection (simple protocol: a walsender takes
// no parameters) and turns a missing, lost or unusable slot into the permanent errors, before
// START_REPLICATION would say the same less clearly.
func checkSlot(ctx context.Context, conn *pgconn.PgConn, slot string) (slotInfo, error) {
	rows, err := conn.Exec(ctx, `SELECT coalesce(plugin, ''), database = current_database(), coalesce(wal_status, ''),
		coalesce(confirmed_flush_lsn::text, '') FROM pg_replication_slots WHERE slot_name = `+engine.QuoteLiteral(slot)).ReadAll()
	if err != nil {
		return slotInfo{}, fmt.Errorf("check slot %s: %w", slot, err)
	}
	if len(rows) != 1 || len(rows[0].Rows) == 0 {
		return slotInfo{}, permanent(fmt.Errorf("check slot: %w", ErrSlotMissing))
	}
	row := rows[0].Rows[0]
	if err := checkPlugin(slot, string(row[0])); err != nil {
		return slotInfo{}, err
	}
	if string(row[1]) != "t" {
		return slotInfo{}, permanent(fmt.Errorf("replication slot %s belongs to another database than the connection's", slot))
	}
	if string(row[2]) == "lost" {
		return slotInfo{}, permanent(fmt.Errorf("check slot: wal_status lost: %w", ErrSlotInvalidated))
	}
	var info slotInfo
	if s := string(row[3]); s != "" {
		if info.confirmed, err = pglogrepl.ParseLSN(s); err != nil {
			return slotInfo{}, fmt.Errorf("check slot %s: confirmed_flush_lsn %q: %w", slot, s, err)
		}
	}
	return info, nil
}

// checkPublications reports the publications of pubs that do not exist now, as a permanent
// error.
func checkPublications(ctx context.Context, conn *pgconn.PgConn, pubs []string) error {
	lits := make([]string, len(pubs))
	for i, p := range pubs {
		lits[i] = engine.QuoteLiteral(p)
	}
	rows, err := conn.Exec(ctx, `SELECT p FROM unnest(ARRAY[`+strings.Join(lits, ",")+`]::text[]) p
		WHERE p NOT IN (SELECT pubname FROM pg_publication)`).ReadAll()
	if err != nil {
		return fmt.Errorf("check publications: %w", err)
	}
	var missing []string
	for _, r := range rows {
		for _, row := range r.Rows {
			missing = append(missing, string(row[0]))
		}
	}
	if len(missing) > 0 {
		return permanent(fmt.Errorf("check publications: %s: %w", strings.Join(missing, ", "), ErrPublicationMissing))
	}
	return nil
}

// currentWAL is the node's WAL insert position now, read on an ordinary connection: the end of
// every record already made, committed or not. (The write position, pg_current_wal_lsn, can be
// behind a commit that has returned under synchronous_commit = off.)
func currentWAL(ctx context.Context, connString string) (pglogrepl.LSN, error) {
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		return 0, fmt.Errorf("read the WAL position: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var lsn pglogrepl.LSN
	if err := conn.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		return 0, fmt.Errorf("read the WAL position: %w", err)
	}
	return lsn, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
