package sqlapi

import (
	"context"
	"fmt"
	"io/fs"
	"path"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/tern/v2/migrate"

	"github.com/ace-agent/ace-agent/migrations"
)

// installLock serialises installs on one node: tern locks only around its own steps, and the
// version table needs the schema to exist first.
const installLock = 7_305_100_001

// squashedVersion is the last migration that 001_baseline.sql stands for: earlier releases
// applied migrations 001 to 5 one by one, and a database they left between two of them cannot
// be upgraded by skipping to the baseline.
const squashedVersion = 5

// Install applies the ace schema's migrations (the tables) to the database conn is connected to,
// then installs the SQL API's functions over whatever versions the database had, in one
// transaction. It is idempotent, and concurrent installs on one node wait for each other. It
// upgrades a database any earlier release installed without touching its tasks and results.
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
	if err := checkSquashable(ctx, conn, m); err != nil {
		return 0, err
	}
	if err := m.Migrate(ctx); err != nil {
		return 0, fmt.Errorf("apply migrations: %w", err)
	}
	if err := installCode(ctx, conn); err != nil {
		return 0, err
	}
	version, err = m.GetCurrentVersion(ctx)
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return version, nil
}

// checkSquashable refuses a database that an earlier release left part-way through its
// migrations 001-005 (a failed install): the baseline stands for all of them, so skipping the
// rest would leave tables out. The baseline's own database is told apart by ace.settings, which
// it creates and the old migrations created only in 005.
func checkSquashable(ctx context.Context, conn *pgx.Conn, m *migrate.Migrator) error {
	v, err := m.GetCurrentVersion(ctx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v <= 0 || v >= squashedVersion {
		return nil
	}
	var baseline bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('ace.settings') IS NOT NULL").Scan(&baseline); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if !baseline {
		return fmt.Errorf("the ace schema is at version %d of the migrations before the baseline; "+
			"finish that install with the release that started it, or drop schema ace and install again", v)
	}
	return nil
}

// installCode runs migrations.Code's files in name order in one transaction: every function of
// the SQL API, defined once with CREATE OR REPLACE, and what depends on them.
func installCode(ctx context.Context, conn *pgx.Conn) error {
	entries, err := fs.ReadDir(migrations.Code, "code")
	if err != nil {
		return fmt.Errorf("load SQL API: %w", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("install SQL API: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	for _, e := range entries {
		name := path.Join("code", e.Name())
		sql, err := fs.ReadFile(migrations.Code, name)
		if err != nil {
			return fmt.Errorf("load SQL API: %w", err)
		}
		if _, err := tx.Exec(ctx, string(sql)); err != nil {
			return fmt.Errorf("install SQL API (migrations/%s): %w", name, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("install SQL API: %w", err)
	}
	return nil
}
