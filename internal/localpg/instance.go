package localpg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ace-agent/ace-agent/internal/pgtls"
)

// Instance is one PostgreSQL server of a Cluster.
type Instance struct {
	Name    string // n1, n2, ...
	Port    int    // TCP port on 127.0.0.1
	DataDir string // PGDATA; also holds server.log

	run   *runner
	log   io.Writer
	certs *pgtls.Authority // set when the instance authenticates by certificate

	identMu sync.Mutex
}

// errPortInUse marks a start that failed only because the port was taken.
var errPortInUse = errors.New("port already in use")

// DefaultSettings are written to every instance's configuration; Options.Settings overrides them.
// Values are unquoted: localpg quotes them when writing postgresql.conf.
func DefaultSettings() map[string]string {
	return map[string]string{
		"listen_addresses":          "127.0.0.1",
		"unix_socket_directories":   "",
		"wal_level":                 "logical",
		"track_commit_timestamp":    "on",
		"max_prepared_transactions": "20",
		"max_connections":           "300",
		"max_replication_slots":     "64",
		"max_wal_senders":           "64",
		"max_worker_processes":      "16",
		"fsync":                     "off",
		"synchronous_commit":        "off",
		"full_page_writes":          "off",
		"shared_buffers":            "128MB",
		"logging_collector":         "off",
	}
}

// DSN returns a libpq keyword/value connection string for dbname on this instance, as the
// superuser postgres (with its certificate, on a CertAuth cluster).
func (i *Instance) DSN(dbname string) string {
	if i.certs == nil {
		return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", i.Port, quoteDSN(dbname))
	}
	dsn, err := i.DSNAs(dbname, "postgres", "postgres")
	if err != nil {
		panic(err) // only a broken certificate directory gets here
	}
	return dsn
}

// DSNAs returns a connection string of a CertAuth instance that logs in as user, presenting the
// client certificate whose common name is certCN (made on first use). The server is verified
// against the cluster's authority.
func (i *Instance) DSNAs(dbname, user, certCN string) (string, error) {
	server, err := i.ServerDSN(dbname)
	if err != nil {
		return "", err
	}
	cert, key, err := i.certs.Client(certCN)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s user=%s sslcert=%s sslkey=%s", server, quoteDSN(user), quoteDSN(cert), quoteDSN(key)), nil
}

// ServerDSN returns how a CertAuth instance's database is reached with the server verified, and
// neither a user nor a client certificate: what ace.nodes holds, the agent bringing both.
func (i *Instance) ServerDSN(dbname string) (string, error) {
	if i.certs == nil {
		return "", fmt.Errorf("%s does not authenticate by certificate", i.Name)
	}
	return fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s sslmode=verify-full sslrootcert=%s",
		i.Port, quoteDSN(dbname), quoteDSN(i.certs.CAFile())), nil
}

// MapIdentity lets a client certificate whose common name is certCN log in as role, by a line
// of the ace map in pg_ident.conf, and reloads the configuration.
func (i *Instance) MapIdentity(ctx context.Context, certCN, role string) error {
	i.identMu.Lock()
	defer i.identMu.Unlock()
	path := filepath.Join(i.DataDir, "pg_ident.conf")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("map %s to %s on %s: %w", certCN, role, i.Name, err)
	}
	line := fmt.Sprintf("ace %q %q\n", certCN, role)
	if err := i.run.writeFile(path, string(b)+line); err != nil {
		return fmt.Errorf("map %s to %s on %s: %w", certCN, role, i.Name, err)
	}
	if _, err := i.run.run(ctx, i.workDir(), "pg_ctl", "reload", "-D", i.DataDir); err != nil {
		return fmt.Errorf("reload %s: %w", i.Name, err)
	}
	return nil
}

func quoteDSN(v string) string {
	if v != "" && !strings.ContainsAny(v, ` '\`) {
		return v
	}
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return "'" + r.Replace(v) + "'"
}

// LogFile is the server log, appended to by every start.
func (i *Instance) LogFile() string { return filepath.Join(i.DataDir, "server.log") }

// workDir is a directory the postgres OS user can enter.
func (i *Instance) workDir() string { return filepath.Dir(i.DataDir) }

func (i *Instance) logf(format string, args ...any) {
	if i.log != nil {
		fmt.Fprintf(i.log, format+"\n", args...)
	}
}

// Start starts a stopped instance again on its recorded port. It is a no-op if it is running.
func (i *Instance) Start(ctx context.Context) error {
	running, err := i.Running(ctx)
	if err != nil {
		return err
	}
	if running {
		return nil
	}
	if err := i.waitReaped(ctx); err != nil {
		return fmt.Errorf("start %s on port %d: %w", i.Name, i.Port, err)
	}
	if err := i.startOnce(ctx); err != nil {
		return fmt.Errorf("start %s on port %d: %w", i.Name, i.Port, err)
	}
	return nil
}

// Stop shuts the instance down (fast mode). It is a no-op if it is not running.
func (i *Instance) Stop(ctx context.Context) error {
	if !fileExists(filepath.Join(i.DataDir, "postmaster.pid")) || i.postmasterZombie() {
		return nil
	}
	i.logf("stopping %s on 127.0.0.1:%d", i.Name, i.Port)
	_, err := i.run.run(ctx, i.workDir(), "pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", i.DataDir)
	if err == nil {
		return nil
	}
	// A crashed server leaves a stale postmaster.pid that makes pg_ctl stop fail.
	if running, serr := i.Running(ctx); serr == nil && !running {
		return nil
	}
	return fmt.Errorf("stop %s on port %d: %w", i.Name, i.Port, err)
}

// Running reports whether the server is up, according to pg_ctl status.
func (i *Instance) Running(ctx context.Context) (bool, error) {
	out, err := i.run.command(ctx, i.workDir(), "pg_ctl", "status", "-D", i.DataDir).CombinedOutput()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return !i.postmasterZombie(), nil
	case errors.As(err, &exitErr) && exitErr.ExitCode() == 3: // documented "not running"
		return false, nil
	default:
		return false, fmt.Errorf("status of %s: %w: %s", i.Name, err, strings.TrimSpace(string(out)))
	}
}

// initdb creates the data directory and writes localpg's configuration.
func (i *Instance) initdb(ctx context.Context, settings map[string]string) error {
	i.logf("initdb %s in %s", i.Name, i.DataDir)
	args := []string{"-D", i.DataDir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"}
	err := i.tryInitdb(ctx, append(args, "--locale=C.UTF-8"))
	if err != nil && ctx.Err() == nil {
		// Minimal images may lack the C.UTF-8 locale; C gives the same byte-order collation.
		if err2 := i.tryInitdb(ctx, append(args, "--no-locale")); err2 != nil {
			return fmt.Errorf("initdb %s: %w", i.Name, errors.Join(err, err2))
		}
		err = nil
	}
	if err != nil {
		return fmt.Errorf("initdb %s: %w", i.Name, err)
	}
	return i.writeConfig(settings)
}

func (i *Instance) tryInitdb(ctx context.Context, args []string) error {
	// Start from an empty, postgres-owned directory so a failed attempt leaves no residue.
	if err := os.RemoveAll(i.DataDir); err != nil {
		return err
	}
	if err := os.Mkdir(i.DataDir, 0o700); err != nil {
		return err
	}
	if err := i.run.chown(i.DataDir); err != nil {
		return err
	}
	_, err := i.run.run(ctx, i.workDir(), "initdb", args...)
	return err
}

// writeConfig keeps our settings in included files so postgresql.conf stays
// stock and the port can be rewritten alone when a retry picks a new one.
func (i *Instance) writeConfig(settings map[string]string) error {
	settings = maps.Clone(settings) // shared by instances set up in parallel
	if err := i.writeAuth(settings); err != nil {
		return err
	}
	var conf strings.Builder
	conf.WriteString("# written by localpg\n")
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		fmt.Fprintf(&conf, "%s = %s\n", k, quoteConf(settings[k]))
	}
	if err := i.run.writeFile(filepath.Join(i.DataDir, "localpg.conf"), conf.String()); err != nil {
		return fmt.Errorf("write localpg.conf of %s: %w", i.Name, err)
	}
	return i.appendIncludes()
}

// writeAuth writes pg_hba.conf: trust, or on a CertAuth instance certificates only, with the
// ace user-name map (a certificate logs in as the role named by its CN, or as a role
// MapIdentity granted it) and the server's TLS files.
func (i *Instance) writeAuth(settings map[string]string) error {
	hba := "local all all trust\n" +
		"local replication all trust\n" +
		"host all all 127.0.0.1/32 trust\n" +
		"host replication all 127.0.0.1/32 trust\n"
	if i.certs != nil {
		hba = "hostssl all all 127.0.0.1/32 cert map=ace\n" +
			"hostssl replication all 127.0.0.1/32 cert map=ace\n"
		ident := "# MAPNAME SYSTEM-USERNAME PG-USERNAME\nace /^(.*)$ \\1\n"
		if err := i.run.writeFile(filepath.Join(i.DataDir, "pg_ident.conf"), ident); err != nil {
			return fmt.Errorf("write pg_ident.conf of %s: %w", i.Name, err)
		}
		cert, key := i.certs.ServerFiles()
		for src, dst := range map[string]string{cert: "server.crt", key: "server.key", i.certs.CAFile(): "ca.crt"} {
			b, err := os.ReadFile(src)
			if err != nil {
				return fmt.Errorf("install TLS files of %s: %w", i.Name, err)
			}
			if err := i.run.writeFile(filepath.Join(i.DataDir, dst), string(b)); err != nil {
				return fmt.Errorf("install TLS files of %s: %w", i.Name, err)
			}
		}
		settings["ssl"] = "on"
		settings["ssl_cert_file"], settings["ssl_key_file"], settings["ssl_ca_file"] = "server.crt", "server.key", "ca.crt"
	}
	if err := i.run.writeFile(filepath.Join(i.DataDir, "pg_hba.conf"), hba); err != nil {
		return fmt.Errorf("write pg_hba.conf of %s: %w", i.Name, err)
	}
	return nil
}

func (i *Instance) appendIncludes() error {
	path := filepath.Join(i.DataDir, "postgresql.conf")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open postgresql.conf of %s: %w", i.Name, err)
	}
	_, err = f.WriteString("\ninclude 'localpg.conf'\ninclude 'localpg_port.conf'\n")
	return errors.Join(err, f.Close())
}

func quoteConf(v string) string {
	return "'" + strings.ReplaceAll(v, "'", "''") + "'"
}

func (i *Instance) writePort() error {
	return i.run.writeFile(filepath.Join(i.DataDir, "localpg_port.conf"), "port = "+strconv.Itoa(i.Port)+"\n")
}

// startFresh starts a new instance, moving to another port if the chosen one got taken.
func (i *Instance) startFresh(ctx context.Context) error {
	const attempts = 4
	var err error
	for a := range attempts {
		if a > 0 || i.Port == 0 {
			if i.Port, err = freePort(); err != nil {
				return err
			}
		}
		if err = i.startOnce(ctx); !errors.Is(err, errPortInUse) {
			break
		}
		i.logf("port %d of %s was taken, retrying", i.Port, i.Name)
	}
	if err != nil {
		return fmt.Errorf("start %s on port %d: %w", i.Name, i.Port, err)
	}
	return nil
}

func (i *Instance) startOnce(ctx context.Context) error {
	if err := i.writePort(); err != nil {
		return fmt.Errorf("write port: %w", err)
	}
	i.logf("starting %s on 127.0.0.1:%d", i.Name, i.Port)
	offset := fileSize(i.LogFile())
	_, err := i.run.run(ctx, i.workDir(), "pg_ctl", "start", "-w", "-t", "60", "-D", i.DataDir, "-l", i.LogFile())
	if err == nil {
		err = i.waitReady(ctx)
	}
	if err == nil {
		return nil
	}
	tail := readFrom(i.LogFile(), offset)
	if strings.Contains(tail, "Address already in use") {
		err = fmt.Errorf("%w: %w", errPortInUse, err)
	}
	return fmt.Errorf("%w\nserver log %s:\n%s", err, i.LogFile(), tail)
}

// waitReady connects once over TCP so "started" really means "accepts connections".
func (i *Instance) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgconn.Connect(cctx, i.DSN("postgres"))
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("wait for connections: %w", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
