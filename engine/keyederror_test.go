package engine_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
)

// A task's error names ranges by position wherever the KeyedErrors sit in it: wrapped, joined
// (one per node of a failed pool), or both; and it still unwraps to the cause.
func TestRedactedKeepsKeysOutOfTheText(t *testing.T) {
	t.Parallel()
	r := engine.Range{Lo: []string{"secret-1"}, Hi: []string{"secret-9"}}
	keyed := func(err error, n int) error {
		return engine.WithKeys(err, fmt.Sprintf("hash range %s on node n%d", r, n), fmt.Sprintf("hash range 3 of 12 on node n%d", n))
	}
	err := fmt.Errorf("rebalance the leaves: %w", errors.Join(
		keyed(errors.New("division by zero"), 1), keyed(context.Canceled, 2)))
	require.Contains(t, err.Error(), "secret-1", "the full text, for the agent's log")

	public := engine.Redacted(err)
	require.Equal(t, "rebalance the leaves: hash range 3 of 12 on node n1: division by zero\nhash range 3 of 12 on node n2: context canceled", public.Error())
	require.ErrorIs(t, public, context.Canceled)
	plain := errors.New("no keys here")
	require.Same(t, plain, engine.Redacted(plain))
	require.NoError(t, engine.Redacted(nil))
}
