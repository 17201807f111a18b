package agent

import (
	"reflect"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// The agent runs every task type of the registry, with the registry's argument type, and no
// type the registry does not list.
func TestEveryTaskTypeHasAHandler(t *testing.T) {
	t.Parallel()
	for _, spec := range sqlapi.TaskSpecs {
		t.Run(string(spec.Type), func(t *testing.T) {
			h, ok := handlers[spec.Type]
			require.True(t, ok, "agent/handlers.go has no handler for %s", spec.Type)
			require.Equal(t, reflect.TypeOf(spec.Args()), h.args, "the handler of %s takes another argument type than the registry names", spec.Type)
		})
	}
	for typ := range handlers {
		_, ok := sqlapi.Spec(typ)
		require.True(t, ok, "the agent handles %s, which sqlapi.TaskSpecs does not list", typ)
	}
}
