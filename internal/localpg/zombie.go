package localpg

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// A postmaster that died (e.g. kill -9) is re-parented to PID 1. Where PID 1
// reaps children only now and then (as in our sandbox VMs), the zombie keeps
// its PID "alive" for kill(pid, 0): pg_ctl status calls it running and a new
// postmaster refuses to start over its lock file. These helpers detect that.

// postmasterPID reads the PID from postmaster.pid, or 0.
func (i *Instance) postmasterPID() int {
	b, err := os.ReadFile(filepath.Join(i.DataDir, "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	pid, _ := strconv.Atoi(string(bytes.TrimSpace(line)))
	return pid
}

// postmasterZombie reports whether the recorded postmaster is a zombie process.
func (i *Instance) postmasterZombie() bool {
	pid := i.postmasterPID()
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may contain spaces.
	if k := bytes.LastIndexByte(b, ')'); k >= 0 && k+2 < len(b) {
		return b[k+2] == 'Z'
	}
	return false
}

// waitReaped waits until a zombie postmaster is gone so its lock file no longer blocks a start.
func (i *Instance) waitReaped(ctx context.Context) error {
	if !i.postmasterZombie() {
		return nil
	}
	i.logf("waiting for dead postmaster of %s to be reaped", i.Name)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i.postmasterZombie() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("old postmaster (pid %d) is still a zombie: %w", i.postmasterPID(), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
