package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/ace-agent/ace-agent/sqlapi"
)

func newTaskCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "task",
		Short: "Show or cancel a task",
	}
	cmd.AddCommand(newTaskShowCmd(g), newTaskCancelCmd(g))
	return cmd
}

func newTaskShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show TASK_ID",
		Short: "Print a task's row of ace.tasks as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: onTask(g, func(cmd *cobra.Command, conn *pgx.Conn, id uuid.UUID) error {
			task, err := sqlapi.GetTask(cmd.Context(), conn, id)
			if errors.Is(err, sqlapi.ErrNoTask) {
				return fmt.Errorf("task %s does not exist", id)
			}
			if err != nil {
				return err
			}
			raw, err := json.Marshal(task)
			if err != nil {
				return fmt.Errorf("encode task %s: %w", id, err)
			}
			return printJSON(cmd.OutOrStdout(), raw)
		}),
	}
}

func newTaskCancelCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel TASK_ID",
		Short: "Cancel a task: at once if it is queued, at its next step if it is running",
		Args:  cobra.ExactArgs(1),
		RunE: onTask(g, func(cmd *cobra.Command, conn *pgx.Conn, id uuid.UUID) error {
			outcome, err := sqlapi.Cancel(cmd.Context(), conn, id)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "task %s: %s\n", id, outcome)
			return nil
		}),
	}
}

// onTask makes a command's RunE that parses its TASK_ID argument and connects to the local node
// for fn.
func onTask(g *globals, fn func(cmd *cobra.Command, conn *pgx.Conn, id uuid.UUID) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		id, err := parseTaskID(args[0])
		if err != nil {
			return err
		}
		return withConn(cmd, g, func(_ context.Context, conn *pgx.Conn) error { return fn(cmd, conn, id) })
	}
}
