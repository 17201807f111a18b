package localpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultBinDir is where Debian's postgresql-15 package puts the server binaries.
const DefaultBinDir = "/usr/lib/postgresql/15/bin"

// runner executes PostgreSQL binaries, switching to the postgres OS user
// when we are root because initdb, pg_ctl and postgres refuse to run as root.
type runner struct {
	binDir string
	cred   *syscall.Credential // nil when not root
	groups []uint32            // all groups of the postgres user, for the traversal check
	home   string
}

func newRunner(binDir string) (*runner, error) {
	r := &runner{binDir: binDir}
	if os.Geteuid() != 0 {
		return r, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs the postgres OS user for initdb/postgres: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse uid of postgres user: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("parse gid of postgres user: %w", err)
	}
	// Groups left empty on purpose: the child must not keep root's supplementary groups.
	r.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	r.groups = lookupGroups(u)
	r.home = u.HomeDir
	return r, nil
}

func lookupGroups(u *user.User) []uint32 {
	ids, _ := u.GroupIds()
	var out []uint32
	for _, id := range append(ids, u.Gid) {
		if g, err := strconv.ParseUint(id, 10, 32); err == nil {
			out = append(out, uint32(g))
		}
	}
	return out
}

// resolveBinDir applies the lookup order documented on Options.BinDir.
func resolveBinDir(ctx context.Context, dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("ACE_PG_BINDIR")
	}
	if dir == "" {
		dir = DefaultBinDir
		out, err := exec.CommandContext(ctx, "pg_config", "--bindir").Output()
		if d := strings.TrimSpace(string(out)); err == nil && fileExists(filepath.Join(d, "initdb")) {
			dir = d
		}
	}
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		if !fileExists(filepath.Join(dir, name)) {
			return "", fmt.Errorf("find PostgreSQL binaries: %s has no %s (set Options.BinDir or ACE_PG_BINDIR)", dir, name)
		}
	}
	return dir, nil
}

func (r *runner) command(ctx context.Context, workDir, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(r.binDir, name), args...)
	// The postgres user may not be able to read our cwd; initdb fails if it cannot getcwd.
	cmd.Dir = workDir
	cmd.Env = r.env()
	// Own process group so a terminal Ctrl-C aimed at the caller does not hit the postmaster.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred, Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run executes a binary and folds its output into the error.
func (r *runner) run(ctx context.Context, workDir, name string, args ...string) ([]byte, error) {
	out, err := r.command(ctx, workDir, name, args...).CombinedOutput()
	if err != nil {
		if msg := strings.TrimSpace(string(out)); msg != "" {
			return out, fmt.Errorf("%s: %w: %s", name, err, msg)
		}
		return out, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// env drops PG* variables (PGDATA, PGPORT, ... would redirect the tools) and
// forces C messages so log parsing ("Address already in use") is reliable.
func (r *runner) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "LC_") || k == "LANG" || k == "LANGUAGE" {
			continue
		}
		if r.cred != nil && (k == "HOME" || k == "USER" || k == "LOGNAME") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "LANG=C")
	if r.cred != nil {
		env = append(env, "HOME="+r.home, "USER=postgres", "LOGNAME=postgres")
	}
	return env
}

// chown hands path to the postgres user when we run as root.
func (r *runner) chown(path string) error {
	if r.cred == nil {
		return nil
	}
	if err := os.Lchown(path, int(r.cred.Uid), int(r.cred.Gid)); err != nil {
		return fmt.Errorf("chown %s to postgres: %w", path, err)
	}
	return nil
}

func (r *runner) writeFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return err
	}
	return r.chown(path)
}

// checkTraversable fails early with a clear message instead of an obscure
// initdb "Permission denied" when e.g. Dir sits under root's 0700 home.
func (r *runner) checkTraversable(dir string) error {
	if r.cred == nil {
		return nil
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			return err
		}
		if !r.canSearch(fi) {
			return fmt.Errorf("the postgres OS user cannot traverse %s (mode %v); choose a Dir under %s or chmod o+x it", p, fi.Mode().Perm(), os.TempDir())
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func (r *runner) canSearch(fi os.FileInfo) bool {
	mode := fi.Mode().Perm()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || mode&0o001 != 0 {
		return true
	}
	if st.Uid == r.cred.Uid {
		return mode&0o100 != 0
	}
	for _, g := range r.groups {
		if st.Gid == g {
			return mode&0o010 != 0
		}
	}
	return false
}

var (
	portMu    sync.Mutex
	portsUsed = map[int]bool{}
)

// freePort asks the kernel for an unused loopback port. The port is free
// only until someone else grabs it, so callers retry on "address in use";
// within this process we never hand out the same port twice.
func freePort() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("pick free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		portMu.Lock()
		seen := portsUsed[port]
		portsUsed[port] = true
		portMu.Unlock()
		if !seen {
			return port, nil
		}
	}
	return 0, errors.New("pick free port: kernel keeps returning ports already used")
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns at most the last maxTail bytes of path written after offset.
func readFrom(path string, offset int64) string {
	const maxTail = 4096
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if size := fileSize(path); size-offset > maxTail {
		offset = size - maxTail
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	return string(bytes.TrimSpace(b))
}

// syncWriter lets parallel node goroutines share one Options.Log.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
