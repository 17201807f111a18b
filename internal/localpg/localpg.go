// Package localpg starts throwaway PostgreSQL 15 instances on loopback ports for tests, the benchmark and the demo.
//
// Every instance listens on 127.0.0.1 only (no unix sockets) and is tuned for speed over
// durability (fsync=off). By default it trusts all local connections; with Options.CertAuth it
// accepts only TLS connections with a client certificate of its own authority (see CertAuth). When the process runs as root, initdb and the server run as
// the postgres OS user, because PostgreSQL refuses to run as root.
//
// A cluster's layout under Options.Dir is:
//
//	cluster.json     state file read by Open (names, ports, data dirs, bin dir)
//	n1/              data directory of n1; n1/server.log is its log
//	n2/ ...
package localpg

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ace-agent/ace-agent/internal/pgtls"
)

// StateFile is the name of the file in Cluster.Dir that lets Open find a running cluster.
const StateFile = "cluster.json"

// Options configures Start.
type Options struct {
	Nodes    int               // number of instances, names n1..nN
	Dir      string            // base directory; empty = new temp dir. Must be empty or absent: Stop removes it
	BinDir   string            // empty = $ACE_PG_BINDIR, else `pg_config --bindir` if it has initdb, else DefaultBinDir
	Settings map[string]string // extra postgresql.conf settings (unquoted values), override DefaultSettings; port is always chosen by localpg
	Log      io.Writer         // optional: progress lines ("starting n1 on 127.0.0.1:54321")
	// CertAuth makes the instances authenticate every connection by client certificate (cert
	// with map=ace in pg_hba.conf; pg_ident.conf maps a certificate's CN onto the role of the
	// same name, and MapIdentity adds more), with a certificate authority made in Dir/certs.
	CertAuth bool
}

// Cluster is a set of instances sharing a base directory.
type Cluster struct {
	Dir   string
	Nodes []*Instance
	// Certs is the certificate authority of a CertAuth cluster, else nil.
	Certs *pgtls.Authority

	binDir string
}

type state struct {
	BinDir  string      `json:"bin_dir"`
	CertDir string      `json:"cert_dir,omitempty"`
	Nodes   []nodeState `json:"nodes"`
}

type nodeState struct {
	Name    string `json:"name"`
	Port    int    `json:"port"`
	DataDir string `json:"data_dir"`
}

// Start creates and starts opts.Nodes instances in parallel and returns once
// each accepts connections. On failure everything it started is stopped and
// the directory is removed.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Nodes < 1 {
		return nil, fmt.Errorf("start cluster: need at least 1 node, got %d", opts.Nodes)
	}
	binDir, err := resolveBinDir(ctx, opts.BinDir)
	if err != nil {
		return nil, err
	}
	r, err := newRunner(binDir)
	if err != nil {
		return nil, err
	}
	dir, err := prepareDir(opts.Dir, r)
	if err != nil {
		return nil, err
	}
	c := newCluster(dir, r, opts)
	if opts.CertAuth {
		if err := c.makeAuthority(); err != nil {
			return nil, errors.Join(err, os.RemoveAll(dir))
		}
	}
	if err := c.bootstrap(ctx, opts.Settings); err != nil {
		// The caller's ctx may be what failed us; cleanup still needs time.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		return nil, errors.Join(err, c.Stop(cctx))
	}
	return c, nil
}

// Bin is the path of one of the cluster's PostgreSQL programs (pg_dump, psql, …).
func (c *Cluster) Bin(name string) string { return filepath.Join(c.binDir, name) }

func newCluster(dir string, r *runner, opts Options) *Cluster {
	c := &Cluster{Dir: dir, binDir: r.binDir}
	var log io.Writer
	if opts.Log != nil {
		log = &syncWriter{w: opts.Log}
	}
	for n := 1; n <= opts.Nodes; n++ {
		name := fmt.Sprintf("n%d", n)
		c.Nodes = append(c.Nodes, &Instance{Name: name, DataDir: filepath.Join(dir, name), run: r, log: log})
	}
	return c
}

func (c *Cluster) bootstrap(ctx context.Context, extra map[string]string) error {
	settings := DefaultSettings()
	maps.Copy(settings, extra)
	err := c.each(func(i *Instance) error {
		if err := i.initdb(ctx, settings); err != nil {
			return err
		}
		return i.startFresh(ctx)
	})
	if err != nil {
		return err
	}
	return c.save()
}

// prepareDir refuses non-empty directories because Stop deletes Dir wholesale.
func prepareDir(dir string, r *runner) (string, error) {
	var err error
	if dir == "" {
		dir, err = os.MkdirTemp(os.TempDir(), "localpg-")
	} else {
		dir, err = createEmptyDir(dir)
	}
	if err != nil {
		return "", err
	}
	// MkdirTemp makes 0700 dirs; the postgres user must be able to enter it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	if err := errors.Join(r.chown(dir), r.checkTraversable(dir)); err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	return dir, nil
}

func createEmptyDir(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return dir, os.MkdirAll(dir, 0o755)
	case err != nil:
		return "", fmt.Errorf("prepare cluster dir: %w", err)
	case fileExists(filepath.Join(dir, StateFile)):
		return "", fmt.Errorf("prepare cluster dir: %s already holds a cluster (use Open)", dir)
	case len(entries) > 0:
		return "", fmt.Errorf("prepare cluster dir: %s is not empty and Stop would delete it", dir)
	}
	return dir, nil
}

// Stop stops all instances (fast shutdown) and removes Dir. Calling it twice is harmless.
func (c *Cluster) Stop(ctx context.Context) error {
	err := c.each(func(i *Instance) error { return i.Stop(ctx) })
	// Remove even if a stop failed: a postmaster whose lock file vanished shuts itself down.
	if rmErr := os.RemoveAll(c.Dir); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("remove %s: %w", c.Dir, rmErr))
	}
	return err
}

// Node returns the instance with the given name, or nil.
func (c *Cluster) Node(name string) *Instance {
	for _, i := range c.Nodes {
		if i.Name == name {
			return i
		}
	}
	return nil
}

func (c *Cluster) each(fn func(*Instance) error) error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for k, i := range c.Nodes {
		wg.Go(func() { errs[k] = fn(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// save writes the state file atomically so a concurrent Open never sees half of it.
// makeAuthority creates the cluster's certificate authority and hands it to every instance.
func (c *Cluster) makeAuthority() error {
	a, err := pgtls.New(filepath.Join(c.Dir, "certs"))
	if err != nil {
		return err
	}
	c.Certs = a
	for _, i := range c.Nodes {
		i.certs = a
	}
	return nil
}

func (c *Cluster) save() error {
	st := state{BinDir: c.binDir}
	if c.Certs != nil {
		st.CertDir = c.Certs.Dir
	}
	for _, i := range c.Nodes {
		st.Nodes = append(st.Nodes, nodeState{Name: i.Name, Port: i.Port, DataDir: i.DataDir})
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(c.Dir, StateFile+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	return os.Rename(tmp, filepath.Join(c.Dir, StateFile))
}

// Open re-opens a cluster left running by Start with a persistent Dir, e.g.
// from another process. It does not check or start the instances; the error
// wraps os.ErrNotExist when dir holds no cluster.
func Open(dir string) (*Cluster, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, fmt.Errorf("open cluster in %s: %w", dir, err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("open cluster in %s: parse %s: %w", dir, StateFile, err)
	}
	r, err := newRunner(st.BinDir)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Dir: dir, binDir: st.BinDir}
	if st.CertDir != "" {
		if c.Certs, err = pgtls.Open(st.CertDir); err != nil {
			return nil, fmt.Errorf("open cluster in %s: %w", dir, err)
		}
	}
	for _, n := range st.Nodes {
		c.Nodes = append(c.Nodes, &Instance{Name: n.Name, Port: n.Port, DataDir: n.DataDir, run: r, certs: c.Certs})
	}
	return c, nil
}
