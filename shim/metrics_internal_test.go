package shim

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// unreachablePool is a pool whose database does not answer: nothing listens on its port.
func unreachablePool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	pool, err := pgxpool.New(context.Background(), "postgres://ace@"+addr+"/ace?connect_timeout=5&sslmode=disable")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// A scrape the database cannot answer is a 503 with what failed, as JSON, like every other
// error of the shim: never a partial exposition a Prometheus server would take for the truth.
func TestMetricsWhenTheDatabaseIsUnreachable(t *testing.T) {
	t.Parallel()
	m := newMetrics(unreachablePool(t), func() int { return 0 }, func() int { return 0 })
	rec := httptest.NewRecorder()
	m.handler(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, "body: %s", rec.Body)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	var body errorBody
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body), "body: %s", rec.Body)
	require.True(t, strings.HasPrefix(body.Error, "read task metrics: "), "error: %s", body.Error)
}

// The shim's metrics live in a registry of its own: two shims in one process (as in tests)
// register theirs without colliding, and the process-wide default registry holds none of them.
func TestMetricsHaveARegistryOfTheirOwn(t *testing.T) {
	t.Parallel()
	pool := unreachablePool(t)
	for range 2 {
		newMetrics(pool, func() int { return 0 }, func() int { return 0 }).submitted("table-diff", nil)
	}
	families, err := prometheus.DefaultGatherer.Gather()
	require.NoError(t, err)
	for _, f := range families {
		require.False(t, strings.HasPrefix(f.GetName(), "ace_"), "%s is in the default registry", f.GetName())
	}
}
