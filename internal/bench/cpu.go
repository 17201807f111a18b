package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ace-agent/ace-agent/internal/localpg"
)

// clockTicks is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on Linux).
const clockTicks = 100

// cpuMeter reads the CPU time the cluster's PostgreSQL processes and the agent have used, so a
// run on a shared machine can be judged by the work done as well as by the wall clock: under
// load from elsewhere, a diff's many processes get a larger share of the cores than the one
// pass's few, and the wall-clock ratio flatters the diff.
type cpuMeter struct {
	postmasters []int
	agent       func() int // the running agent's pid, 0 if none
}

func newCPUMeter(c *localpg.Cluster) *cpuMeter {
	m := &cpuMeter{agent: func() int { return 0 }}
	for _, n := range c.Nodes {
		raw, err := os.ReadFile(filepath.Join(n.DataDir, "postmaster.pid"))
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.SplitN(string(raw), "\n", 2)[0]); err == nil {
			m.postmasters = append(m.postmasters, pid)
		}
	}
	return m
}

// sample returns the CPU seconds used so far by PostgreSQL (each postmaster, the children it
// reaped and the sessions and parallel workers alive, not its background processes) and by the
// agent.
func (m *cpuMeter) sample() (postgres, agent float64) {
	parents := map[int]bool{}
	for _, pm := range m.postmasters {
		parents[pm] = true
		if f := statFields(pm); f != nil {
			postgres += ticks(f, 11) + ticks(f, 12) + ticks(f, 13) + ticks(f, 14) // utime, stime, cutime, cstime
		}
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(pid)
		if f == nil {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); parents[ppid] && !background(pid) {
			postgres += ticks(f, 11) + ticks(f, 12)
		}
	}
	if pid := m.agent(); pid != 0 {
		if f := statFields(pid); f != nil {
			agent = ticks(f, 11) + ticks(f, 12)
		}
	}
	return postgres, agent
}

// backgroundProcesses are PostgreSQL's own long-lived processes, whose work (a checkpoint, a
// change stream's decoding) is not the measured query's.
var backgroundProcesses = []string{"postgres: checkpointer", "postgres: background writer", "postgres: walwriter",
	"postgres: autovacuum launcher", "postgres: logical replication launcher", "postgres: walsender", "postgres: archiver"}

func background(pid int) bool {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return true
	}
	for _, p := range backgroundProcesses {
		if strings.HasPrefix(string(raw), p) {
			return true
		}
	}
	return false
}

// statFields are the fields of /proc/<pid>/stat after the command name: [0] is the state, [1]
// the parent's pid, [11] utime, [12] stime, [13] cutime, [14] cstime.
func statFields(pid int) []string {
	raw, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	s := string(raw)
	end := strings.LastIndexByte(s, ')')
	if end < 0 {
		return nil
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 15 {
		return nil
	}
	return f
}

func ticks(f []string, i int) float64 {
	v, _ := strconv.ParseFloat(f[i], 64)
	return v / clockTicks
}
