package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// binPath is the ace-agent binary the tests run.
var binPath string

func TestMain(m *testing.M) {
	path, err := buildBinary()
	if err != nil {
		fmt.Fprintln(os.Stderr, "build ace-agent:", err)
		os.Exit(2)
	}
	binPath = path
	testcluster.Main(m)
}

// buildBinary builds ace-agent into a new directory beside the test binary, which go test
// removes when it is done (testcluster.Main exits, so no cleanup of ours would run).
func buildBinary() (string, error) {
	dir := os.TempDir()
	if exe, err := os.Executable(); err == nil {
		dir = filepath.Dir(exe)
	}
	binDir, err := os.MkdirTemp(dir, "ace-agent-bin-")
	if err != nil {
		if binDir, err = os.MkdirTemp("", "ace-agent-bin-"); err != nil {
			return "", err
		}
	}
	out := filepath.Join(binDir, "ace-agent")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if msg, err := exec.CommandContext(ctx, "go", "build", "-o", out, ".").CombinedOutput(); err != nil {
		return "", fmt.Errorf("%w: %s", err, msg)
	}
	return out, nil
}

// cliResult is how a run of the binary ended.
type cliResult struct {
	code           int
	stdout, stderr string
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// ace runs the binary with ACE_DSN=dsn (none when empty) and waits for it.
func ace(t *testing.T, dsn string, args ...string) cliResult {
	t.Helper()
	return aceIn(t, "", dsn, args...)
}

// aceIn runs the binary in dir.
func aceIn(t *testing.T, dir, dsn string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := aceCommand(ctx, cliEnv(dsn), args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		require.NoError(t, err, "run ace-agent %v", args)
	}
	return cliResult{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

func aceCommand(ctx context.Context, env []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Env = env
	return cmd
}

// cliEnv is the test's environment without ACE_* variables, plus ACE_DSN=dsn and extra.
func cliEnv(dsn string, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ACE_") {
			env = append(env, kv)
		}
	}
	if dsn != "" {
		env = append(env, "ACE_DSN="+dsn)
	}
	return append(env, extra...)
}

var submittedRE = regexp.MustCompile(`table-diff task ([0-9a-f-]{36}) submitted`)

// submittedID finds the task id a table-diff printed.
func submittedID(t *testing.T, r cliResult) uuid.UUID {
	t.Helper()
	m := submittedRE.FindStringSubmatch(r.stderr)
	require.NotNil(t, m, "no task id in: %s", r)
	return uuid.MustParse(m[1])
}

// syncBuffer is a bytes.Buffer safe for a process writing and a test reading.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is the binary running in the background.
type proc struct {
	cmd    *exec.Cmd
	out    *syncBuffer // stdout and stderr
	done   chan struct{}
	waited error
}

// startProc starts the binary and, when the test ends, kills it if it still runs.
func startProc(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = aceCommand(context.Background(), env, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	require.NoError(t, p.cmd.Start())
	go func() {
		p.waited = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of ace-agent %v:\n%s", args, p.out)
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit code (-1 when a signal killed it).
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		require.FailNow(t, "ace-agent did not exit", "within %s; output:\n%s", timeout, p.out)
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Signal(sig))
}

// startAgentProc runs `ace-agent run` for the node, with short intervals.
func startAgentProc(t *testing.T, n *testcluster.Node, extraEnv ...string) *proc {
	t.Helper()
	env := cliEnv(n.DSN, append([]string{"ACE_NODE=" + n.Name, "ACE_POLL_INTERVAL=200ms",
		"ACE_HEARTBEAT_INTERVAL=200ms", "ACE_STALE_AFTER=5s", "ACE_PROGRESS_INTERVAL=50ms",
		"ACE_DIFF_WORKERS=2", "ACE_LOG_LEVEL=debug"}, extraEnv...)...)
	return startProc(t, env, "run")
}

// getTask reads a task's row.
func getTask(t *testing.T, n *testcluster.Node, id uuid.UUID) sqlapi.Task {
	t.Helper()
	task, err := sqlapi.GetTask(context.Background(), n.Pool, id)
	require.NoError(t, err)
	return task
}

// submitDiff queues a table-diff with SQL, as a DBA would.
func submitDiff(t *testing.T, n *testcluster.Node, table string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT ace.table_diff($1)`, table).Scan(&id))
	return id
}

// createTable makes public.t with rows 1..n, identical on every node.
func createTable(e *testcluster.Env, n int) {
	e.ExecAll(`CREATE TABLE t (id int PRIMARY KEY, v text)`)
	e.ExecAll(`INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, $1::int) g`, n)
}
