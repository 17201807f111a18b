package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/ace-agent/ace-agent/sqlapi"
)

func newRepairPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "repair-policy",
		Short: "Repair drift on a timer, guarded: create, list, run, pause, resume and drop repair policies, or import ACE's auto_repair_config",
		Long: `Repair policies (ace.repair_policies on the local node) diff a table and repair what
outlives recheck_after, as the role that made them: never more than max_rows keys (more are held
for a person), never while a node is down, at most max_runs_per_hour times an hour, and never a row
changed since the diff. Each role sees and changes only its own. See docs/repair-policies.md.`,
	}
	cmd.AddCommand(newPolicyCreateCmd(g), newPolicyListCmd(g), newPolicyRunCmd(g), newPolicyImportCmd(g))
	for _, c := range []struct {
		use, short string
		change     sqlapi.PolicyChange
	}{
		{"drop", "Drop a policy and its timer (its past runs stay in ace.tasks)", sqlapi.DropPolicy},
		{"pause", "Pause a policy's timer: no runs until it is resumed (runs by hand still work)", sqlapi.PausePolicy},
		{"resume", "Resume a paused policy, at its next due time after now", sqlapi.ResumePolicy},
	} {
		cmd.AddCommand(newChangeCmd(g, c.use, c.short, "repair policy", func(ctx context.Context, conn *pgx.Conn, name string) (bool, error) {
			return sqlapi.ChangeRepairPolicy(ctx, conn, name, c.change)
		}))
	}
	return cmd
}

func newPolicyCreateCmd(g *globals) *cobra.Command {
	var spec sqlapi.RepairPolicySpec
	var maxRows, maxRuns int
	var disabled bool
	cmd := &cobra.Command{
		Use:   "create NAME TABLE",
		Short: "Make a repair policy (or redefine yours of that name) with ace.repair_policy",
		Long: `Make a repair policy, or redefine yours of that name, with ace.repair_policy. --strategy is
source_of_truth (with --source-of-truth), latest_commit, majority or plan (with --repair-plan, a
saved plan). Give --every or --cron to run it on a timer; without either it runs only by
'ace-agent repair-policy run'. Everything is checked now, as you, and again at every run.`,
		Example: `  ace-agent repair-policy create orders-fix public.orders --strategy source_of_truth --source-of-truth n1 --every 10m
  ace-agent repair-policy create orders-vote public.orders --strategy majority --cron '*/15 * * * *' --max-rows 100
  ace-agent repair-policy create conflicts public.orders --strategy latest_commit --trigger spock_exceptions --every 15m`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, pos []string) error {
			spec.Name, spec.TableName = pos[0], pos[1]
			spec.MaxRows, spec.MaxRunsPerHour, spec.Enabled = &maxRows, &maxRuns, new(!disabled)
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				due, err := sqlapi.AddRepairPolicy(ctx, conn, spec)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "repair policy %s saved: %s\n", spec.Name, firstDue(due))
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Strategy, "strategy", "", "source_of_truth, latest_commit, majority or plan (required)")
	f.StringVar(&spec.SourceOfTruth, "source-of-truth", "", "the node whose rows are right (strategy source_of_truth)")
	f.StringVar(&spec.RepairPlan, "repair-plan", "", "a saved repair plan of yours (strategy plan)")
	f.StringVar(&spec.Every, "every", "", "run every this interval (a PostgreSQL interval or a Go duration: '10 minutes', 10m)")
	f.StringVar(&spec.Cron, "cron", "", "run by this five-field cron expression, in the schedule_timezone setting")
	f.StringVar(&spec.Trigger, "trigger", "schedule", "schedule (each run diffs the table) or spock_exceptions (the keys of its PENDING Spock exceptions)")
	f.StringVar(&spec.RecheckAfter, "recheck-after", "30 seconds", "how long a difference may be replication lag before it counts as drift")
	f.IntVar(&maxRows, "max-rows", 1000, "hold the run, repairing nothing, when more keys than this differ")
	f.IntVar(&maxRuns, "max-runs-per-hour", 6, "skip runs beyond this many in the last hour")
	f.BoolVar(&spec.DryRun, "dry-run", false, "diff and report what would be repaired, write nothing")
	f.StringSliceVar(&spec.Nodes, "nodes", nil, "the nodes to compare and repair (default: every registered node)")
	f.BoolVar(&spec.UpsertOnly, "upsert-only", false, "insert and update, never delete")
	f.StringVar(&spec.Scope, "scope", "node", "node (this node's agent runs it) or cluster (the leader's agent does; create it on every node)")
	f.BoolVar(&disabled, "disabled", false, "make its timer paused")
	f.BoolVar(&spec.RunNow, "run-now", false, "run at once, then on the timer")
	_ = cmd.MarkFlagRequired("strategy")
	cmd.PreRun = func(*cobra.Command, []string) { goDurations(&spec.Every, &spec.RecheckAfter) }
	return cmd
}

// goDurations rewrites Go durations (10m, 1h30m) as PostgreSQL intervals, which take them only
// spelt out; anything else is left for PostgreSQL to read.
func goDurations(values ...*string) {
	for _, v := range values {
		if d, err := time.ParseDuration(*v); err == nil {
			*v = fmt.Sprintf("%g seconds", d.Seconds())
		}
	}
}

func firstDue(due *time.Time) string {
	if due == nil {
		return "no timer: it runs when you run it ('ace-agent repair-policy run NAME')"
	}
	return "first due at " + due.Format(time.RFC3339)
}

func newPolicyListCmd(g *globals) *cobra.Command {
	return newListCmd(g, "List your repair policies: their timer and how their last run ended",
		"print the rows of ace.repair_policy_status as JSON", sqlapi.RepairPolicies, printPolicies)
}

func printPolicies(w io.Writer, all []sqlapi.RepairPolicy) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tOWNER\tTABLE\tSTRATEGY\tTRIGGER\tWHEN\tENABLED\tNEXT DUE\tLAST OUTCOME\tLAST REASON")
	for _, p := range all {
		when, next := "by hand", ""
		switch {
		case p.Every != nil:
			when = "every " + *p.Every
		case p.Cron != nil:
			when = "cron " + *p.Cron
		}
		if p.NextDue != nil {
			next = p.NextDue.Format(time.RFC3339)
		}
		strategy := p.Strategy
		if p.DryRun {
			strategy += " (dry run)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%t\t%s\t%s\t%s\n", p.Name, p.Owner, p.TableName, strategy, p.Trigger, when,
			p.Enabled, next, deref(p.LastOutcome), deref(p.LastReason))
	}
	return tw.Flush()
}

func newPolicyRunCmd(g *globals) *cobra.Command {
	var wait, quiet, asJSON bool
	cmd := &cobra.Command{
		Use:   "run NAME",
		Short: "Start a run of a repair policy now and print its task id, or with --wait its outcome",
		Long: `Start a run of a repair policy now, whatever its timer. With --wait, wait for it and print its
outcome; the exit code is 0 when the table ends in sync (in_sync, or repaired with nothing left), 1
when differences remain (held, skipped, a dry run, or keys the repair could not settle) and 2 when
the run failed.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				id, err := sqlapi.RunRepairPolicy(ctx, conn, args[0])
				if err != nil {
					return err
				}
				if !wait {
					fmt.Fprintln(cmd.OutOrStdout(), id)
					return nil
				}
				task, err := followTask(ctx, conn, id, quiet, cmd.ErrOrStderr())
				if err != nil {
					return err
				}
				return reportPolicyRun(cmd.OutOrStdout(), task, asJSON)
			})
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for the run and print its outcome")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "show no progress while waiting")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the run's result as JSON")
	return cmd
}

// reportPolicyRun prints how a run ended and returns the exit code's error.
func reportPolicyRun(w io.Writer, task sqlapi.Task, asJSON bool) error {
	if task.Status != sqlapi.StatusCompleted {
		return fmt.Errorf("repair policy run %s %s: %s", task.ID, task.Status, deref(task.Error))
	}
	var r struct {
		Outcome       string `json:"outcome"`
		Reason        string `json:"reason"`
		DifferingKeys int64  `json:"differing_keys"`
		Inserted      int64  `json:"inserted"`
		Updated       int64  `json:"updated"`
		Deleted       int64  `json:"deleted"`
		RemainingKeys int64  `json:"remaining_keys"`
	}
	if err := json.Unmarshal(task.Result, &r); err != nil {
		return fmt.Errorf("read the result of run %s: %w", task.ID, err)
	}
	if asJSON {
		if err := printJSON(w, task.Result); err != nil {
			return err
		}
	} else {
		line := fmt.Sprintf("run %s: %s", task.ID, r.Outcome)
		if r.Outcome == "repaired" {
			line += fmt.Sprintf(" (%d differing, %d inserted, %d updated, %d deleted, %d still differ)", r.DifferingKeys,
				r.Inserted, r.Updated, r.Deleted, r.RemainingKeys)
		}
		if r.Reason != "" {
			line += ": " + r.Reason
		}
		fmt.Fprintln(w, line)
	}
	if r.Outcome == "in_sync" || (r.Outcome == "repaired" && r.RemainingKeys == 0) {
		return nil
	}
	return errDiffers
}

func newPolicyImportCmd(g *globals) *cobra.Command {
	var dryRun bool
	var tables []string
	var scope string
	cmd := &cobra.Command{
		Use:   "import ACE_YAML",
		Short: "Make repair policies of ACE's auto_repair_config (ace.yaml)",
		Long: `Make what ACE's auto-repair daemon promised of its auto_repair_config: one policy per table
(--tables, or every table with a primary key you may read), named auto_repair_<schema>_<table>,
with trigger spock_exceptions (each run repairs the keys of the table's PENDING Spock exceptions
and marks them RESOLVED) and strategy latest_commit (Spock's own last-update-wins), every
repair_frequency; each run also polls the exceptions, so poll_frequency has no use of its own. A
disabled auto_repair_config makes paused policies. cluster_name and dbname name this node's
cluster and database. All or none are made.`,
		Example: `  ace-agent repair-policy import ace.yaml --tables public.orders,public.customers --dry-run`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("read %s: %w", args[0], err)
			}
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				if len(tables) == 0 {
					if tables, err = sqlapi.ReadableTables(ctx, conn); err != nil {
						return err
					}
				}
				specs, notes, err := aceAutoRepair(raw, tables, scope)
				if err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
				for _, n := range notes {
					fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
				}
				if dryRun {
					return encodeJSON(cmd.OutOrStdout(), specs)
				}
				return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
					for _, s := range specs {
						due, err := sqlapi.AddRepairPolicy(ctx, tx, s)
						if err != nil {
							return fmt.Errorf("import the policy of %s (nothing was imported): %w", s.TableName, err)
						}
						fmt.Fprintf(cmd.OutOrStdout(), "repair policy %s imported: %s\n", s.Name, firstDue(due))
					}
					return nil
				})
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the policies as JSON (ace.repair_policy's arguments) instead of making them")
	cmd.Flags().StringSliceVar(&tables, "tables", nil, "the tables to repair (default: every table with a primary key you may read)")
	cmd.Flags().StringVar(&scope, "scope", "node", "node (this node's agent runs them) or cluster (the leader's; import on every node)")
	return cmd
}

// aceAutoRepairConfig is ACE's auto_repair_config block of ace.yaml.
type aceAutoRepairConfig struct {
	AutoRepair *struct {
		Enabled         bool   `yaml:"enabled"`
		ClusterName     string `yaml:"cluster_name"`
		DBName          string `yaml:"dbname"`
		PollFrequency   string `yaml:"poll_frequency"`
		RepairFrequency string `yaml:"repair_frequency"`
	} `yaml:"auto_repair_config"`
}

// aceAutoRepair converts ACE's auto_repair_config into one spock_exceptions policy per table,
// with notes on what was read how.
func aceAutoRepair(raw []byte, tables []string, scope string) ([]sqlapi.RepairPolicySpec, []string, error) {
	var c aceAutoRepairConfig
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return nil, nil, fmt.Errorf("read ACE's configuration: %w", err)
	}
	if c.AutoRepair == nil {
		return nil, nil, withHint(errors.New("no auto_repair_config block"), "ACE configures its auto-repair daemon in ace.yaml's auto_repair_config")
	}
	a := c.AutoRepair
	if len(tables) == 0 {
		return nil, nil, withHint(errors.New("no table to repair"), "name them with --tables public.orders,...; you may read no table with a primary key")
	}
	freq := a.RepairFrequency
	if freq == "" {
		freq = "15m" // ACE's default
	}
	d, err := time.ParseDuration(freq)
	if err != nil || d <= 0 {
		return nil, nil, fmt.Errorf("repair_frequency %q is not a positive duration such as 15m", freq)
	}
	notes := []string{fmt.Sprintf("each run polls the Spock exceptions and repairs them every %s (repair_frequency); poll_frequency %q has no use of its own", freq, a.PollFrequency)}
	if a.ClusterName != "" || a.DBName != "" {
		notes = append(notes, fmt.Sprintf("cluster_name %q and dbname %q: the policies are made on this node's database, whose ace.nodes is the cluster", a.ClusterName, a.DBName))
	}
	if !a.Enabled {
		notes = append(notes, "auto_repair_config is disabled: the policies are made paused (ace-agent repair-policy resume NAME starts one)")
	}
	specs := make([]sqlapi.RepairPolicySpec, 0, len(tables))
	for _, t := range tables {
		specs = append(specs, sqlapi.RepairPolicySpec{
			Name: "auto_repair_" + strings.NewReplacer(".", "_", `"`, "").Replace(t), TableName: t,
			Strategy: "latest_commit", Trigger: sqlapi.TriggerSpockExceptions,
			Every: fmt.Sprintf("%g seconds", d.Seconds()), Scope: scope, Enabled: new(a.Enabled),
		})
	}
	return specs, notes, nil
}
