package shim_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// Every REST route the task registry names is served as a submission: it answers a body that is
// not JSON as a submission does (415), not as an unknown path (404).
func TestRegistryRoutesAreServed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.as(t, e.alice)
	for _, spec := range sqlapi.TaskSpecs {
		for _, path := range spec.Routes {
			t.Run(path, func(t *testing.T) {
				r := do(t, alice, http.MethodPost, e.url+path, "text/plain", "x")
				require.Equal(t, http.StatusUnsupportedMediaType, r.code, "POST %s (%s): %s", path, spec.Type, r.body)
			})
		}
	}
}
