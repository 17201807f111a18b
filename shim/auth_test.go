package shim_test

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/pgtls"
	"github.com/ace-agent/ace-agent/shim"
)

// Client certificates are judged by the shim, which answers a refusal with 401 and a JSON
// reason; a certificate it accepts whose CN has no login in the database gets 403.
func TestClientCertificates(t *testing.T) {
	t.Parallel()
	e := setup(t)
	now := time.Now()
	dir := t.TempDir()
	revokedCert, revokedKey, err := e.ca.ClientValidity("revoked", e.alice, now.Add(-time.Hour), now.Add(time.Hour))
	require.NoError(t, err)
	freshCRL, staleCRL := filepath.Join(dir, "fresh.crl"), filepath.Join(dir, "stale.crl")
	require.NoError(t, e.ca.WriteCRL(freshCRL, now.Add(-time.Minute), now.Add(time.Hour), revokedCert))
	require.NoError(t, e.ca.WriteCRL(staleCRL, now.Add(-2*time.Hour), now.Add(-time.Hour)))
	withCRL, _ := e.serve(t, func(c *shim.Config) { c.CRLFile = freshCRL })
	withStaleCRL, _ := e.serve(t, func(c *shim.Config) { c.CRLFile = staleCRL })
	aliceOnly, _ := e.serve(t, func(c *shim.Config) { c.AllowedCNs = []string{e.alice} })
	other, err := pgtls.New(t.TempDir())
	require.NoError(t, err)
	otherCert, otherKey, err := other.Client(e.alice)
	require.NoError(t, err)
	expiredCert, expiredKey, err := e.ca.ClientValidity("expired", e.alice, now.Add(-48*time.Hour), now.Add(-24*time.Hour))
	require.NoError(t, err)
	futureCert, futureKey, err := e.ca.ClientValidity("future", e.alice, now.Add(24*time.Hour), now.Add(48*time.Hour))
	require.NoError(t, err)

	cases := []struct {
		name   string
		client *http.Client
		url    string
		code   int
		error  string
	}{
		{"good certificate", e.as(t, e.alice), e.url, http.StatusOK, ""},
		{"good certificate, fresh CRL", e.as(t, e.alice), withCRL, http.StatusOK, ""},
		{"another CA", e.client(t, otherCert, otherKey), e.url, http.StatusUnauthorized, "not signed by a trusted CA"},
		{"expired", e.client(t, expiredCert, expiredKey), e.url, http.StatusUnauthorized, "expired at"},
		{"not yet valid", e.client(t, futureCert, futureKey), e.url, http.StatusUnauthorized, "is not valid before"},
		{"revoked", e.client(t, revokedCert, revokedKey), withCRL, http.StatusUnauthorized, "is revoked"},
		{"stale CRL", e.as(t, e.alice), withStaleCRL, http.StatusUnauthorized, "revocation list is out of date"},
		{"CN outside the allow-list", e.as(t, e.bob), aliceOnly, http.StatusUnauthorized, "not in ACE_SHIM_ALLOWED_CNS"},
		{"CN inside the allow-list", e.as(t, e.alice), aliceOnly, http.StatusOK, ""},
		{"CN without a role", e.as(t, e.DB+"_nobody"), e.url, http.StatusForbidden, "cannot log in to the database as " + e.DB + "_nobody"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			// A task-status request of an unknown task: 404 once the caller is let in and
			// logged in, so every layer before it is exercised.
			r := do(t, c.client, http.MethodGet, c.url+"/api/v1/tasks/00000000-0000-4000-8000-000000000000", "", "")
			if c.code == http.StatusOK {
				require.Equal(t, http.StatusNotFound, r.code, "body: %s", r.body)
				return
			}
			require.Equal(t, c.code, r.code, "body: %s", r.body)
			require.Equal(t, "application/json", r.header.Get("Content-Type"))
			require.Contains(t, r.json(t)["error"], c.error)
		})
	}
}

// Requests the shim cannot map get ACE's status codes; what it can map is judged by the SQL side.
func TestRequestErrors(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.as(t, e.alice)
	cases := []struct {
		name, method, path, contentType, body string
		code                                  int
		error                                 string
	}{
		{"not JSON", "POST", "/api/v1/table-diff", "application/json", "{table:", http.StatusBadRequest, "invalid JSON payload"},
		{"not an object", "POST", "/ace/table-diff", "application/json", `["public.t"]`, http.StatusBadRequest, "invalid JSON payload"},
		{"wrong content type", "POST", "/api/v1/table-diff", "text/plain", `{"table": "public.t"}`, http.StatusUnsupportedMediaType, "Content-Type: application/json"},
		{"missing field", "POST", "/api/v1/table-diff", "application/json", `{"nodes": ["n1", "n2"]}`, http.StatusBadRequest, "table_name"},
		{"SQL validation", "POST", "/api/v1/table-diff", "application/json", `{"table": "public.t", "block_size": 5}`, http.StatusBadRequest, "block_size"},
		{"unknown table", "POST", "/ace/table-diff", "application/json", `{"table_name": "public.nope"}`, http.StatusBadRequest, "public.nope"},
		{"unknown field", "POST", "/api/v1/table-diff", "application/json", `{"table": "public.t", "tabel_filter": "id > 1"}`, http.StatusBadRequest, `unknown field "tabel_filter"`},
		{"repair of an unknown diff", "POST", "/api/v1/table-repair", "application/json", `{"table": "public.t", "diff_file": "00000000-0000-4000-8000-000000000000", "source_of_truth": "n1"}`, http.StatusBadRequest, "does not exist"},
		{"unknown task", "GET", "/api/v1/tasks/00000000-0000-4000-8000-000000000000", "", "", http.StatusNotFound, "no such task"},
		{"unknown task, seed route", "GET", "/ace/task-status?task_id=00000000-0000-4000-8000-000000000000", "", "", http.StatusNotFound, "no such task"},
		{"unknown route", "GET", "/api/v1/nope", "", "", http.StatusNotFound, "no route"},
		{"wrong method on a submission", "GET", "/api/v1/table-diff", "", "", http.StatusMethodNotAllowed, "use POST"},
		{"wrong method on a status", "DELETE", "/api/v1/tasks/00000000-0000-4000-8000-000000000000", "", "", http.StatusMethodNotAllowed, "use GET"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := do(t, alice, c.method, e.url+c.path, c.contentType, c.body)
			require.Equal(t, c.code, r.code, "body: %s", r.body)
			require.Contains(t, r.json(t)["error"], c.error)
			if c.code == http.StatusMethodNotAllowed {
				require.NotEmpty(t, r.header.Get("Allow"))
			}
		})
	}
}

// A role that may submit but not read the table is refused at once, naming the privilege; one
// that may read it on n1 only gets its task, which fails on the node where it may not: the diff
// runs with the caller's privileges on every node, as from psql.
func TestCallerWithoutPrivilege(t *testing.T) {
	t.Parallel()
	e := setup(t)
	carol := e.AddSubmitter("carol", true)
	c := e.as(t, carol)
	r := post(t, c, e.url+"/api/v1/table-diff", map[string]any{"table": "public.t"})
	require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
	require.Contains(t, r.json(t)["error"], "cannot read table t")

	e.Node("n1").Exec(t, "GRANT SELECT ON public.t TO "+carol)
	id := submit(t, c, e.url+"/api/v1/table-diff", map[string]any{"table": "public.t"})
	task := waitTask(t, c, e.url+"/api/v1/tasks/"+id)
	require.Equal(t, "FAILED", task["status"])
	require.Contains(t, taskError(task), "permission denied for table t")
}
