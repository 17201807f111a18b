package sqlapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/tern/v2/migrate"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/migrations"
)

// installLock serialises installs on one node: tern locks only around its own steps, and the
// version table needs the schema to exist first. ternLock is tern's own key, which Migrate waits
// for without a limit: Install takes it first, with the same limit (advisory locks nest within a
// session, so tern's own wait then returns at once).
const (
	installLock = 7_305_100_001
	ternLock    = 9_628_173_550_095_224
)

// DefaultLockTimeout is how long Install waits for the install lock, and for each lock its DDL
// needs, before it gives up naming the sessions that hold them: any login can take an advisory
// lock, or hold a lock on a table it may read, so no wait may be unbounded.
const DefaultLockTimeout = time.Minute

// squashedVersion is the last migration that 001_baseline.sql stands for: earlier releases
// applied migrations 001 to 5 one by one, and a database they left between two of them cannot
// be upgraded by skipping to the baseline.
const squashedVersion = 5

// InstallOptions tune Install.
type InstallOptions struct {
	// LockTimeout bounds each wait for a lock; zero means DefaultLockTimeout.
	LockTimeout time.Duration
}

// Install is InstallWith with the default options.
func Install(ctx context.Context, conn *pgx.Conn) (version int32, err error) {
	return InstallWith(ctx, conn, InstallOptions{})
}

// InstallWith applies the ace schema's migrations (the tables) to the database conn is connected
// to, then installs the SQL API's functions over whatever versions the database had, in one
// transaction. It is idempotent, and concurrent installs on one node wait for each other. It
// upgrades a database any earlier release installed without touching its tasks and results.
//
// It refuses a schema ace that is not the installing role's alone (see SchemaOwnershipProblems):
// its owner could replace the functions that the agent and every submitter run.
func InstallWith(ctx context.Context, conn *pgx.Conn, opts InstallOptions) (version int32, err error) {
	timeout := cmp.Or(opts.LockTimeout, DefaultLockTimeout)
	release, err := takeInstallLocks(ctx, conn, timeout)
	if err != nil {
		return 0, err
	}
	defer func() {
		if unlockErr := release(); err == nil && unlockErr != nil {
			err = unlockErr
		}
	}()
	// On a Spock node, the ace schema is each node's own: its DDL must not replicate.
	if err := engine.KeepLocal(ctx, conn); err != nil {
		return 0, err
	}
	// IF NOT EXISTS accepts a schema someone else made: the check after it is what refuses one.
	if _, err := conn.Exec(ctx, "CREATE SCHEMA IF NOT EXISTS ace"); err != nil {
		return 0, fmt.Errorf("create schema ace: %w", err)
	}
	if err := checkSchemaOwned(ctx, conn); err != nil {
		return 0, err
	}
	m, err := migrate.NewMigrator(ctx, conn, "ace.schema_version")
	if err != nil {
		return 0, lockWaitError(ctx, conn, "prepare migrations", err)
	}
	if err := m.LoadMigrations(migrations.FS); err != nil {
		return 0, fmt.Errorf("load migrations: %w", err)
	}
	// tern runs "reset all" after each migration, so each one sets its own lock_timeout.
	for _, mig := range m.Migrations {
		mig.UpSQL = lockTimeoutSQL(timeout) + mig.UpSQL
	}
	if err := checkSquashable(ctx, conn, m); err != nil {
		return 0, err
	}
	if err := m.Migrate(ctx); err != nil {
		return 0, lockWaitError(ctx, conn, "apply migrations", err)
	}
	if err := installCode(ctx, conn, timeout); err != nil {
		return 0, err
	}
	version, err = m.GetCurrentVersion(ctx)
	if err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return version, nil
}

// lockTimeoutSQL bounds the waits of the transaction it starts, and keeps its DDL from
// replicating through Spock (tern resets the session's settings between migrations).
func lockTimeoutSQL(timeout time.Duration) string {
	return fmt.Sprintf("SET LOCAL lock_timeout = %d;\n%s;\n", max(timeout.Milliseconds(), 1), engine.KeepLocalInTransaction)
}

// takeInstallLocks takes the install lock and tern's, each within timeout, and returns what
// releases them.
func takeInstallLocks(ctx context.Context, conn *pgx.Conn, timeout time.Duration) (release func() error, err error) {
	var taken []int64
	release = func() error {
		var firstErr error
		for _, key := range taken {
			// A fresh context: the lock must be released even when ctx was cancelled.
			if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", key); err != nil && firstErr == nil {
				firstErr = fmt.Errorf("release install lock: %w", err)
			}
		}
		return firstErr
	}
	deadline := time.Now().Add(timeout)
	for _, key := range []int64{installLock, ternLock} {
		if err := tryAdvisoryLock(ctx, conn, key, deadline); err != nil {
			_ = release()
			return nil, err
		}
		taken = append(taken, key)
	}
	return release, nil
}

// tryAdvisoryLock takes the session advisory lock key, trying until deadline: pg_advisory_lock
// would wait for as long as any login that takes the key likes.
func tryAdvisoryLock(ctx context.Context, conn *pgx.Conn, key int64, deadline time.Time) error {
	for pause := 10 * time.Millisecond; ; pause = min(2*pause, 250*time.Millisecond) {
		var got bool
		if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got); err != nil {
			return fmt.Errorf("take install lock: %w", err)
		}
		if got {
			return nil
		}
		if time.Now().After(deadline) {
			holders, err := advisoryLockHolders(ctx, conn, key)
			if err != nil {
				return err
			}
			return fmt.Errorf("another session has held the install lock (advisory lock %d) for longer than the lock timeout: %s; "+
				"wait for its install to end, or end that session (SELECT pg_terminate_backend(pid)) if it is not an install, and run install again", key, holders)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("take install lock: %w", ctx.Err())
		case <-time.After(pause):
		}
	}
}

// advisoryLockHolders names the other sessions that hold advisory lock key in this database.
func advisoryLockHolders(ctx context.Context, conn *pgx.Conn, key int64) (string, error) {
	return describeSessions(ctx, conn, `SELECT l.pid FROM pg_locks l
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND l.classid = ($1::bigint >> 32)::oid AND l.objid = ($1::bigint & 4294967295)::oid`, key)
}

// describeSessions lists the sessions whose pids pidsSQL returns, other than conn's own, by
// pid, user and application: what an administrator needs to find them.
func describeSessions(ctx context.Context, conn *pgx.Conn, pidsSQL string, args ...any) (string, error) {
	rows, err := conn.Query(ctx, `SELECT format('pid %s (user %s, application %L)', a.pid, a.usename, a.application_name)
		FROM pg_stat_activity a WHERE a.pid IN (`+pidsSQL+`) AND a.pid <> pg_backend_pid() ORDER BY a.pid`, args...)
	if err != nil {
		return "", fmt.Errorf("find the sessions holding the lock: %w", err)
	}
	sessions, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", fmt.Errorf("find the sessions holding the lock: %w", err)
	}
	if len(sessions) == 0 {
		return "a session that has ended since", nil
	}
	return "held by " + strings.Join(sessions, ", "), nil
}

// lockWaitError explains a lock timeout of the install's DDL with the sessions that hold locks on
// the ace schema's tables: any user who may read a table can hold its lock in an open transaction.
func lockWaitError(ctx context.Context, conn *pgx.Conn, doing string, err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.LockNotAvailable {
		return fmt.Errorf("%s: %w", doing, err)
	}
	holders, hErr := describeSessions(ctx, conn, `SELECT l.pid FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
		WHERE l.granted AND c.relnamespace = 'ace'::regnamespace
		  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	if hErr != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	return fmt.Errorf("%s: a table of the ace schema stayed locked for longer than the lock timeout, %s: "+
		"end those transactions (SELECT pg_terminate_backend(pid)) and run install again: %w", doing, holders, err)
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
func installCode(ctx context.Context, conn *pgx.Conn, timeout time.Duration) error {
	entries, err := fs.ReadDir(migrations.Code, "code")
	if err != nil {
		return fmt.Errorf("load SQL API: %w", err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("install SQL API: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, lockTimeoutSQL(timeout)); err != nil {
		return fmt.Errorf("install SQL API: %w", err)
	}
	for _, e := range entries {
		name := path.Join("code", e.Name())
		sql, err := fs.ReadFile(migrations.Code, name)
		if err != nil {
			return fmt.Errorf("load SQL API: %w", err)
		}
		if _, err := tx.Exec(ctx, string(sql)); err != nil {
			_ = tx.Rollback(ctx) // lockWaitError reads the catalogs on conn
			return lockWaitError(ctx, conn, "install SQL API (migrations/"+name+")", err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("install SQL API: %w", err)
	}
	return nil
}

// checkSchemaOwned refuses to install into a schema ace that is not the installing role's alone.
func checkSchemaOwned(ctx context.Context, conn *pgx.Conn) error {
	problems, err := SchemaOwnershipProblems(ctx, conn)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		return fmt.Errorf("refusing to install into schema ace, which is not the installing role's alone (nothing was changed):\n  %s",
			strings.Join(problems, "\n  "))
	}
	return nil
}

// ownershipSQL lists, for the schema ace of the current database, every way a role other than
// the current one could change what runs there: the schema's owner, the owner of each object in
// it (of every kind that has one), the owner of each trigger function on its tables, and grants
// of CREATE on the schema or TRIGGER on its tables. The owner of any of these could replace or
// add code that the agent's login and every submitter run. Each row is one problem, worded with
// its fix; none when the schema does not exist.
const ownershipSQL = `
WITH me AS (SELECT oid, rolname FROM pg_roles WHERE rolname = current_user),
ns AS (SELECT oid, nspowner, nspacl FROM pg_namespace WHERE nspname = 'ace'),
owned (kind, name, owner, drop_sql) AS (
	SELECT k.kind, c.oid::regclass::text, c.relowner, format('DROP %s %s', upper(k.kind), c.oid::regclass)
		FROM pg_class c JOIN (VALUES ('r', 'table'), ('p', 'table'), ('v', 'view'), ('m', 'materialized view'),
			('S', 'sequence'), ('f', 'foreign table'), ('i', 'index'), ('I', 'index'), ('c', 'type')) k(relkind, kind)
			ON k.relkind = c.relkind::text, ns
		WHERE c.relnamespace = ns.oid
	UNION ALL SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
		p.oid::regprocedure::text, p.proowner, format('DROP ROUTINE %s', p.oid::regprocedure)
		FROM pg_proc p, ns WHERE p.pronamespace = ns.oid
	-- A relation's row type and an array type have their relation's or element's owner.
	UNION ALL SELECT 'type', t.oid::regtype::text, t.typowner, format('DROP TYPE %s', t.oid::regtype)
		FROM pg_type t, ns WHERE t.typnamespace = ns.oid AND t.typrelid = 0 AND t.typcategory <> 'A'
	UNION ALL SELECT 'operator', o.oid::regoperator::text, o.oprowner, format('DROP OPERATOR %s', o.oid::regoperator)
		FROM pg_operator o, ns WHERE o.oprnamespace = ns.oid
	UNION ALL SELECT 'operator class', format('ace.%I', c.opcname), c.opcowner,
		format('DROP OPERATOR CLASS ace.%I USING %I', c.opcname, (SELECT amname FROM pg_am WHERE oid = c.opcmethod))
		FROM pg_opclass c, ns WHERE c.opcnamespace = ns.oid
	UNION ALL SELECT 'operator family', format('ace.%I', f.opfname), f.opfowner,
		format('DROP OPERATOR FAMILY ace.%I USING %I', f.opfname, (SELECT amname FROM pg_am WHERE oid = f.opfmethod))
		FROM pg_opfamily f, ns WHERE f.opfnamespace = ns.oid
	UNION ALL SELECT 'collation', format('ace.%I', c.collname), c.collowner, format('DROP COLLATION ace.%I', c.collname)
		FROM pg_collation c, ns WHERE c.collnamespace = ns.oid
	UNION ALL SELECT 'conversion', format('ace.%I', c.conname), c.conowner, format('DROP CONVERSION ace.%I', c.conname)
		FROM pg_conversion c, ns WHERE c.connamespace = ns.oid
	UNION ALL SELECT 'statistics object', format('ace.%I', s.stxname), s.stxowner, format('DROP STATISTICS ace.%I', s.stxname)
		FROM pg_statistic_ext s, ns WHERE s.stxnamespace = ns.oid
	UNION ALL SELECT 'text search configuration', format('ace.%I', c.cfgname), c.cfgowner, format('DROP TEXT SEARCH CONFIGURATION ace.%I', c.cfgname)
		FROM pg_ts_config c, ns WHERE c.cfgnamespace = ns.oid
	UNION ALL SELECT 'text search dictionary', format('ace.%I', d.dictname), d.dictowner, format('DROP TEXT SEARCH DICTIONARY ace.%I', d.dictname)
		FROM pg_ts_dict d, ns WHERE d.dictnamespace = ns.oid
	UNION ALL SELECT 'extension', format('%I', e.extname), e.extowner, format('DROP EXTENSION %I', e.extname)
		FROM pg_extension e, ns WHERE e.extnamespace = ns.oid
	UNION ALL SELECT 'trigger function', format('%s (of trigger %I on %s)', p.oid::regprocedure, g.tgname, g.tgrelid::regclass), p.proowner,
		format('DROP TRIGGER %I ON %s', g.tgname, g.tgrelid::regclass)
		FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_proc p ON p.oid = g.tgfoid, ns
		WHERE c.relnamespace = ns.oid AND NOT g.tgisinternal
)
SELECT format('schema ace is owned by %s, not %s: ALTER SCHEMA ace OWNER TO %s as a superuser after checking its contents, or DROP SCHEMA ace CASCADE',
	pg_get_userbyid(ns.nspowner), me.rolname, quote_ident(me.rolname))
	FROM ns, me WHERE ns.nspowner <> me.oid
UNION ALL
SELECT format('%s %s in schema ace is owned by %s, not %s: check what it does, then as a superuser %s (or give it to %s)',
	o.kind, o.name, pg_get_userbyid(o.owner), me.rolname, o.drop_sql, quote_ident(me.rolname))
	FROM owned o, me WHERE o.owner <> me.oid
UNION ALL
SELECT format('schema ace grants CREATE to %s, who can add objects to it: REVOKE CREATE ON SCHEMA ace FROM %s, and check what it made there',
	coalesce(pg_get_userbyid(nullif(a.grantee, 0)), 'PUBLIC'), coalesce(quote_ident(pg_get_userbyid(nullif(a.grantee, 0))), 'PUBLIC'))
	FROM ns, aclexplode(ns.nspacl) a WHERE a.privilege_type = 'CREATE' AND a.grantee <> ns.nspowner
UNION ALL
SELECT format('table %s grants TRIGGER to %s, who can attach code to it: REVOKE TRIGGER ON %s FROM %s',
	c.oid::regclass, coalesce(pg_get_userbyid(nullif(a.grantee, 0)), 'PUBLIC'), c.oid::regclass,
	coalesce(quote_ident(pg_get_userbyid(nullif(a.grantee, 0))), 'PUBLIC'))
	FROM pg_class c JOIN ns ON c.relnamespace = ns.oid, aclexplode(c.relacl) a
	WHERE a.privilege_type = 'TRIGGER' AND a.grantee <> c.relowner`

// SchemaOwnershipProblems says what in the schema ace of q's database is not the current role's
// alone, one problem per line with its fix; nothing when the schema does not exist. Install
// refuses such a schema, and ace-agent doctor reports it on every node.
func SchemaOwnershipProblems(ctx context.Context, q Querier) ([]string, error) {
	rows, err := q.Query(ctx, ownershipSQL)
	if err != nil {
		return nil, fmt.Errorf("check who owns schema ace: %w", err)
	}
	problems, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("check who owns schema ace: %w", err)
	}
	return problems, nil
}
