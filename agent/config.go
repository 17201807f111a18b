// Package agent is the ace-agent daemon: it listens for tasks on its node, claims them with
// SKIP LOCKED, runs a bounded number at once (within the per-role limits of ace.settings and
// max_task_runtime), heartbeats, recovers tasks whose agent died, deletes finished tasks past
// task_retention, fires due schedules as their owners, and shuts down gracefully, handing
// unfinished tasks back. The algorithms
// themselves live in engine; this package runs them for a task, as its submitter.
//
// A map of the files:
//
//   - agent.go: Agent, Run and the worker pool; config.go: the ACE_* environment.
//   - background.go: the listener (LISTEN ace_task, ace_task_cancel), the heartbeat, the
//     recovery sweep and retention.
//   - execute.go: one claimed task, from dispatch by task type to its end or hand-back;
//     limits.go: max_task_runtime and cancel requests.
//   - repair.go, mtree.go, report.go: the repair, Merkle-tree and report parts of running a task.
//   - schemadiff.go, repsetdiff.go: parent tasks, one child table-diff per table; childnodes.go:
//     the node pools a parent's children share.
//   - trees.go: the tree keeper, the node's only consumer of its change streams (one per
//     publication owner, through package cdc), recording changed keys in ace.mtree_pending.
//   - treestatus.go: the collection of every node's tree status into ace.mtree_node_status.
//   - clusterstatus.go: the collection of every node's status into ace.node_status, and the
//     events of its transitions (agent_lost, config_drift, leader_changed).
//   - scheduler.go: the due schedules of ace.schedules, fired in sessions logged in as their owners.
package agent

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Config is the agent's configuration, read from ACE_* environment variables.
type Config struct {
	DSN               string        `envconfig:"DSN" required:"true" desc:"connection string of the local node"`
	Node              string        `envconfig:"NODE" required:"true" desc:"this node's name in ace.nodes"`
	MaxTasks          int           `envconfig:"MAX_TASKS" default:"4" desc:"tasks run at once"`
	DiffWorkers       int           `envconfig:"DIFF_WORKERS" default:"0" desc:"blocks a diff hashes at once (0 = number of CPUs)"`
	PollInterval      time.Duration `envconfig:"POLL_INTERVAL" default:"2s" desc:"how often to look for tasks without a notification"`
	HeartbeatInterval time.Duration `envconfig:"HEARTBEAT_INTERVAL" default:"5s" desc:"how often to heartbeat and look for orphaned tasks"`
	StaleAfter        time.Duration `envconfig:"STALE_AFTER" default:"60s" desc:"heartbeat age after which a task's agent counts as hung"`
	ShutdownGrace     time.Duration `envconfig:"SHUTDOWN_GRACE" default:"20s" desc:"on SIGTERM, how long running tasks may finish before being handed back"`
	ProgressInterval  time.Duration `envconfig:"PROGRESS_INTERVAL" default:"500ms" desc:"minimum time between progress updates of a task"`
	TreeTxWait        time.Duration `envconfig:"TREE_TX_WAIT" default:"60s" desc:"how long mtree_build waits for the transactions that were open when it began tracking the table's changes, before it fails naming them"`
	RetentionInterval time.Duration `envconfig:"RETENTION_INTERVAL" default:"10m" desc:"how often to delete finished tasks older than the task_retention setting"`
	ScheduleInterval  time.Duration `envconfig:"SCHEDULE_INTERVAL" default:"1s" desc:"how often to look for due schedules (ace.schedules)"`
	ReportDir         string        `envconfig:"REPORT_DIR" default:"reports" desc:"where a diff's output report (json, html, csv) is written"`
	LogLevel          string        `envconfig:"LOG_LEVEL" default:"info" desc:"debug, info, warn or error"`
	Impersonation     string        `envconfig:"IMPERSONATION" default:"login" desc:"how task sessions become the submitter: login (log in as the submitting role, with the agent's certificate mapped by pg_ident.conf) or set_role (log in as the agent and SET ROLE: only for clusters whose submitters are all trusted)"`
}

// Impersonation modes: how a task's sessions on the nodes become the submitting role.
const (
	// ImpersonateLogin logs in as the submitter: PostgreSQL itself keeps everything that runs
	// in the session at the submitter's privileges.
	ImpersonateLogin = "login"
	// ImpersonateSetRole logs in as the agent and SETs ROLE to the submitter. Code that runs in
	// such a session can RESET ROLE to the agent's login, so filters and the tables' own code
	// are checked against an allow-list first; for clusters whose submitters are all trusted.
	ImpersonateSetRole = "set_role"
)

// setRole reports whether task sessions SET ROLE instead of logging in as the submitter.
func (c Config) setRole() bool { return c.Impersonation == ImpersonateSetRole }

// LoadConfig reads the configuration from the environment.
func LoadConfig() (Config, error) {
	var c Config
	if err := envconfig.Process("ACE", &c); err != nil {
		return c, fmt.Errorf("read configuration: %w (see 'ace-agent help run' for the ACE_* variables)", err)
	}
	if c.MaxTasks < 1 {
		return c, fmt.Errorf("ACE_MAX_TASKS must be at least 1, got %d", c.MaxTasks)
	}
	if c.Impersonation != ImpersonateLogin && c.Impersonation != ImpersonateSetRole {
		return c, fmt.Errorf("ACE_IMPERSONATION must be %s or %s, got %q", ImpersonateLogin, ImpersonateSetRole, c.Impersonation)
	}
	return c, nil
}

// Usage describes the configuration variables with their defaults.
func Usage() string { return EnvUsage(&Config{}) }

// EnvUsage describes the ACE_* variables of spec, an envconfig struct, with their defaults: the
// one layout of every command configured by the environment (run, serve).
func EnvUsage(spec any) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 2, 4, 2, ' ', 0)
	_ = envconfig.Usagef("ACE", spec, tw, "{{range .}}  {{usage_key .}}\t{{usage_default .}}\t{{usage_description .}}\n{{end}}")
	_ = tw.Flush()
	return b.String()
}
