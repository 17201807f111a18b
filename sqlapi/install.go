package sqlapi

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"

	"github.com/ace-agent/ace-agent/migrations"
)

// installLock serialises installs on one node: tern locks only around its own steps, and the
// version table needs the schema to exist first.
const installLock = 7_305_100_001

// Install applies the ace schema's migrations to the database conn is connected to. It is
// idempotent, and concurrent installs on one node wait for each other.
func Install(ctx context.Context, conn *pgx.Conn) (version int32, err error) {
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(installLock)); err != nil {
		return 0, fmt.Errorf("take install lock: %w", err)
	}
	defer func() {
		// A fresh context: the lock must be released even when ctx was cancelled.
		_, unlockErr := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", int64(installLock))
		if err == nil && unlockErr != nil {
			err = fmt.Errorf("release install lock: %w", unlockErr)
		}
	}()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS ace"); err != nil {
		return 0, fmt.Errorf("create schema ace: %w", err)
	}
	m, err := migrate.NewMigrator(ctx, conn, "ace.schema_version")
	if err != nil {
		return 0, fmt.Errorf("prepare migrations: %w", err)
	}
	if err := m.LoadMigrations(migrations.FS); err != nil {
		return 0, fmt.Errorf("load migrations: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return 0, fmt.Errorf("apply migrations: %w", err)
	}
	version, err = m.GetCurrentVersion(ctx)
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return version, nil
}
