package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/ace-agent/ace-agent/internal/localpg"
)

// aceBinEnv names ACE's binary: when set, ACE's own schema-diff runs on the same data, for its
// time beside ours.
const aceBinEnv = "ACE_BIN"

// aceSchemaDiff runs `ace schema-diff bench <schema>` with ACE_BIN over the cluster's nodes, in a
// directory of its own holding the ace.yaml and pg_service.conf ACE reads (its diff files are
// written there too), and returns how long it took. It returns 0 and no error when ACE_BIN is
// not set.
func aceSchemaDiff(ctx context.Context, c *localpg.Cluster, db, schema string) (time.Duration, error) {
	bin := os.Getenv(aceBinEnv)
	if bin == "" {
		return 0, nil
	}
	dir, err := os.MkdirTemp("", "ace-bench-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	// ACE's defaults, but its table-diff's compare unit; the cluster is pg_service.conf's [bench].
	config := "default_cluster: bench\ntable_diff:\n  concurrency_factor: 0.5\n  max_diff_rows: 1000000\n  compare_unit_size: 10000\n  max_connections: 0\n"
	service := fmt.Sprintf("[bench]\ndbname=%s\nuser=postgres\n", db)
	for _, n := range c.Nodes {
		service += fmt.Sprintf("\n[bench.%s]\nhost=127.0.0.1\nport=%d\n", n.Name, n.Port)
	}
	if err := os.WriteFile(filepath.Join(dir, "ace.yaml"), []byte(config), 0o600); err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(dir, "pg_service.conf"), []byte(service), 0o600); err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, bin, "schema-diff", "bench", schema, "--nodes", "all", "--quiet")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "ACE_CONFIG="+filepath.Join(dir, "ace.yaml"), "ACE_PGSERVICEFILE="+filepath.Join(dir, "pg_service.conf"))
	start := time.Now()
	out, err := cmd.CombinedOutput()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("ACE's schema-diff (%s %s): %w: %s", bin, strings.Join(cmd.Args[1:], " "), err, lastLines(string(out), 5))
	}
	step("ACE schema-diff of schema %s: %.3fs", schema, d.Seconds())
	return d, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
