package agent

import (
	"context"
	"fmt"
	"time"
)

// runtimeLimitError stops a task that ran longer than max_task_runtime; the task fails with it.
type runtimeLimitError struct{ limit time.Duration }

func (e runtimeLimitError) Error() string {
	return fmt.Sprintf("stopped after running for max_task_runtime (%s); the owner of the ace schema can raise the limit: "+
		"UPDATE ace.settings SET value = '24 hours' WHERE name = 'max_task_runtime'", e.limit)
}

// withRuntimeLimit ends ctx with a runtimeLimitError once the task has run for limit (0: never).
func withRuntimeLimit(ctx context.Context, limit time.Duration) (context.Context, context.CancelFunc) {
	if limit <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeoutCause(ctx, limit, runtimeLimitError{limit: limit})
}
