package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/ace-agent/ace-agent/sqlapi"
)

func newScheduleCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "schedule",
		Short: "Run tasks on a timer: add, list, remove, pause, resume and run schedules, or import ACE's",
		Long: `Schedules (ace.schedules on the local node) start a task every interval or by a cron
expression, on behalf of the role that made them; the agents fire them. Each role sees and changes
only its own. See docs/schedules.md.`,
	}
	cmd.AddCommand(newScheduleAddCmd(g), newScheduleListCmd(g), newScheduleImportCmd(g))
	for _, c := range []struct {
		use, short string
		change     sqlapi.ScheduleChange
	}{
		{"remove", "Remove a schedule (its past runs stay in ace.tasks)", sqlapi.RemoveSchedule},
		{"pause", "Pause a schedule: no runs until it is resumed", sqlapi.PauseSchedule},
		{"resume", "Resume a paused schedule, at its next due time after now", sqlapi.ResumeSchedule},
	} {
		cmd.AddCommand(newChangeCmd(g, c.use, c.short, "schedule", func(ctx context.Context, conn *pgx.Conn, name string) (bool, error) {
			return true, sqlapi.ChangeSchedule(ctx, conn, name, c.change)
		}))
	}
	cmd.AddCommand(newScheduleRunCmd(g))
	return cmd
}

func newScheduleAddCmd(g *globals) *cobra.Command {
	var spec sqlapi.ScheduleSpec
	var args string
	var noRunNow, disabled bool
	cmd := &cobra.Command{
		Use:   "add NAME TASK_TYPE",
		Short: "Make a schedule (or redefine yours of that name) with ace.schedule",
		Long: `Make a schedule, or redefine yours of that name, with ace.schedule: give --every or --cron.
The task's arguments (--args, a JSON object with the task's SQL argument names) are validated now,
as you, and again at every run.`,
		Example: `  ace-agent schedule add orders-hourly table-diff --args '{"table_name": "public.orders"}' --every 1h
  ace-agent schedule add nightly schema-diff --args '{"schema_name": "public"}' --cron '30 2 * * *' --scope cluster`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, pos []string) error {
			spec.Name, spec.TaskType, spec.Args = pos[0], pos[1], json.RawMessage(args)
			spec.RunNow, spec.Enabled = new(!noRunNow), new(!disabled)
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				due, err := sqlapi.AddSchedule(ctx, conn, spec)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "schedule %s added: first due at %s\n", spec.Name, due.Format(time.RFC3339))
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&args, "args", "{}", "the task's arguments, a JSON object")
	f.StringVar(&spec.Every, "every", "", "run every this interval (a PostgreSQL interval: '1 hour', '90 seconds')")
	f.StringVar(&spec.Cron, "cron", "", "run by this five-field cron expression, in the schedule_timezone setting")
	f.BoolVar(&noRunNow, "no-run-now", false, "wait for the first due time instead of running at once")
	f.StringVar(&spec.Scope, "scope", "node", "node (this node's agent runs it) or cluster (the leader's agent does; add it on every node)")
	f.StringVar(&spec.Overlap, "overlap", "skip", "skip (a due time whose previous run is still queued or running is skipped) or allow")
	f.BoolVar(&disabled, "disabled", false, "make it paused")
	return cmd
}

func newScheduleListCmd(g *globals) *cobra.Command {
	return newListCmd(g, "List your schedules: when each is next due, its runs, skips and last error",
		"print the rows of ace.schedules as JSON", sqlapi.Schedules, printSchedules)
}

// newListCmd is a list command: it reads rows as the caller and prints them as a table, or as
// JSON with --json.
func newListCmd[T any](g *globals, short, jsonUsage string, read func(context.Context, sqlapi.Querier) ([]T, error),
	print func(io.Writer, []T) error) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				all, err := read(ctx, conn)
				if err != nil {
					return err
				}
				if asJSON {
					return encodeJSON(cmd.OutOrStdout(), all)
				}
				return print(cmd.OutOrStdout(), all)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, jsonUsage)
	return cmd
}

func printSchedules(w io.Writer, all []sqlapi.Schedule) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tOWNER\tTYPE\tWHEN\tSCOPE\tENABLED\tNEXT DUE\tRUNS\tSKIPPED\tFAILED\tLAST ERROR")
	for _, s := range all {
		when := "cron " + deref(s.Cron)
		if s.Every != nil {
			when = "every " + *s.Every
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%t\t%s\t%d\t%d\t%d\t%s\n", s.Name, s.Owner, s.TaskType, when, s.Scope, s.Enabled,
			s.NextDue.Format(time.RFC3339), s.Runs, s.Skipped, s.Failures, deref(s.LastError))
	}
	return tw.Flush()
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// newChangeCmd is a command that changes one of the caller's objects by name (pause, resume,
// remove or drop a schedule or a repair policy): change reports whether there was one.
func newChangeCmd(g *globals, use, short, what string, change func(ctx context.Context, conn *pgx.Conn, name string) (bool, error)) *cobra.Command {
	return &cobra.Command{
		Use:   use + " NAME",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				found, err := change(ctx, conn, args[0])
				if err != nil {
					return err
				}
				if !found {
					return withHint(fmt.Errorf("you have no %s %q", what, args[0]), fmt.Sprintf("ace-agent %s list lists yours", strings.ReplaceAll(what, " ", "-")))
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %s done\n", what, args[0], use)
				return nil
			})
		},
	}
}

func newScheduleRunCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "run NAME",
		Short: "Start a run of a schedule now, outside its timetable, and print its task id",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				id, err := sqlapi.RunSchedule(ctx, conn, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), id)
				return nil
			})
		},
	}
}

func newScheduleImportCmd(g *globals) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "import ACE_YAML",
		Short: "Make schedules of ACE's schedule_jobs and schedule_config (ace.yaml)",
		Long: `Make one schedule per entry of ACE's schedule_config, running its job of schedule_jobs: the
job's table-diff, schema-diff or repset-diff with its args, every run_frequency (a Go duration) or
by crontab_schedule, running once at once as ACE does, never overlapping (ACE's singleton mode),
paused unless enabled is true. Arguments that have no meaning here (dbname, quiet,
skip_db_update, taskstore_path, ...) are left out and named. All or none are made.`,
		Example: `  ace-agent schedule import ace.yaml --dry-run`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("read %s: %w", args[0], err)
			}
			specs, notes, err := aceSchedules(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			for _, n := range notes {
				fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
			}
			if dryRun {
				return encodeJSON(cmd.OutOrStdout(), specs)
			}
			return withConn(cmd, g, func(ctx context.Context, conn *pgx.Conn) error {
				return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
					for _, s := range specs {
						due, err := sqlapi.AddSchedule(ctx, tx, s)
						if err != nil {
							return fmt.Errorf("import job %s (nothing was imported): %w", s.Name, err)
						}
						fmt.Fprintf(cmd.OutOrStdout(), "schedule %s imported: %s, first due at %s\n", s.Name, s.TaskType, due.Format(time.RFC3339))
					}
					return nil
				})
			})
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print the schedules as JSON (ace.schedule's arguments) instead of making them")
	return cmd
}

// aceConfig is the part of ACE's ace.yaml that holds its scheduler.
type aceConfig struct {
	Jobs   []aceJob      `yaml:"schedule_jobs"`
	Config []aceSchedule `yaml:"schedule_config"`
}

// aceJob is an entry of schedule_jobs: what to run.
type aceJob struct {
	Name        string         `yaml:"name"`
	Type        string         `yaml:"type"`
	ClusterName string         `yaml:"cluster_name"`
	TableName   string         `yaml:"table_name"`
	SchemaName  string         `yaml:"schema_name"`
	RepsetName  string         `yaml:"repset_name"`
	Args        map[string]any `yaml:"args"`
}

// aceSchedule is an entry of schedule_config: when to run a job.
type aceSchedule struct {
	JobName      string `yaml:"job_name"`
	Crontab      string `yaml:"crontab_schedule"`
	RunFrequency string `yaml:"run_frequency"`
	Enabled      bool   `yaml:"enabled"`
}

// aceJobArgs maps ACE's job args onto the task's argument names; ACE's Python scheduler called
// block_size block_rows.
var aceJobArgs = map[string]string{
	"nodes": "nodes", "block_size": "block_size", "block_rows": "block_size", "concurrency_factor": "concurrency_factor",
	"compare_unit_size": "compare_unit_size", "max_diff_rows": "max_diff_rows", "max_connections": "max_connections",
	"output": "output", "table_filter": "table_filter", "override_block_size": "override_block_size",
	"skip_tables": "skip_tables", "ddl_only": "ddl_only",
}

// aceSchedules converts ACE's schedule_jobs and schedule_config into ace.schedule's arguments,
// with notes on what was left out.
func aceSchedules(raw []byte) ([]sqlapi.ScheduleSpec, []string, error) {
	var c aceConfig
	if err := yaml.Unmarshal(raw, &c); err != nil {
		return nil, nil, fmt.Errorf("read ACE's configuration: %w", err)
	}
	if len(c.Config) == 0 {
		return nil, nil, withHint(errors.New("no schedule_config entries"), "ACE schedules a job of schedule_jobs by an entry of schedule_config naming it")
	}
	var specs []sqlapi.ScheduleSpec
	var notes []string
	scheduled := map[string]bool{}
	for _, sc := range c.Config {
		i := slices.IndexFunc(c.Jobs, func(j aceJob) bool { return j.Name == sc.JobName })
		if i < 0 {
			return nil, nil, fmt.Errorf("schedule_config names job %q, which schedule_jobs does not have", sc.JobName)
		}
		scheduled[sc.JobName] = true
		spec, dropped, err := aceScheduleSpec(c.Jobs[i], sc)
		if err != nil {
			return nil, nil, fmt.Errorf("job %s: %w", sc.JobName, err)
		}
		if len(dropped) > 0 {
			notes = append(notes, fmt.Sprintf("job %s: left out %s (no meaning to ace-agent)", sc.JobName, strings.Join(dropped, ", ")))
		}
		specs = append(specs, spec)
	}
	for _, j := range c.Jobs {
		if !scheduled[j.Name] {
			notes = append(notes, fmt.Sprintf("job %s has no schedule_config entry: not imported", j.Name))
		}
	}
	return specs, notes, nil
}

// aceScheduleSpec is one job and its schedule as ace.schedule's arguments, and the job's args
// that were left out, sorted.
func aceScheduleSpec(job aceJob, sc aceSchedule) (sqlapi.ScheduleSpec, []string, error) {
	spec := sqlapi.ScheduleSpec{Name: job.Name, TaskType: job.Type, RunNow: new(true), Overlap: "skip", Enabled: new(sc.Enabled)}
	switch {
	case (sc.Crontab == "") == (sc.RunFrequency == ""):
		return spec, nil, errors.New("give exactly one of crontab_schedule and run_frequency")
	case sc.Crontab != "":
		spec.Cron = sc.Crontab
	default:
		d, err := time.ParseDuration(sc.RunFrequency)
		if err != nil || d <= 0 {
			return spec, nil, fmt.Errorf("run_frequency %q is not a positive duration such as 30s, 5m or 1h", sc.RunFrequency)
		}
		spec.Every = fmt.Sprintf("%g seconds", d.Seconds())
	}
	args := map[string]any{}
	switch {
	case spec.TaskType == "table-diff" || spec.TaskType == "" && job.TableName != "":
		spec.TaskType, args["table_name"] = "table-diff", job.TableName
	case spec.TaskType == "schema-diff" || spec.TaskType == "" && job.SchemaName != "":
		spec.TaskType, args["schema_name"] = "schema-diff", job.SchemaName
	case spec.TaskType == "repset-diff" || spec.TaskType == "" && job.RepsetName != "":
		spec.TaskType, args["repset"] = "repset-diff", job.RepsetName
	default:
		return spec, nil, fmt.Errorf("type %q is none of table-diff, schema-diff and repset-diff, and no table_name, schema_name or repset_name says which", job.Type)
	}
	var dropped []string
	for k, v := range job.Args {
		if name, ok := aceJobArgs[k]; ok {
			args[name] = v
		} else {
			dropped = append(dropped, k)
		}
	}
	slices.Sort(dropped)
	encoded, err := json.Marshal(args)
	if err != nil {
		return spec, nil, fmt.Errorf("encode its args: %w", err)
	}
	spec.Args = encoded
	return spec, dropped, nil
}
