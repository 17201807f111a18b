package shim_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// The Spock exception update over both route sets (issue 18): the seed's synchronous
// POST /ace/update-spock-exception and ACE-style /api/v1/spock/exception-update. Spock is
// stubbed by its own table definitions on n2, which holds one exception of two commands.
func TestSpockExceptionRoutes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	n2 := e.Node("n2")
	n2.CreateSpockTables(t)
	n2.Exec(t, `INSERT INTO spock.exception_log (remote_origin, remote_commit_ts, remote_xid, command_counter,
			retry_errored_at, table_schema, table_name, operation, error_message) VALUES
		(1001, '2024-03-15T12:34:56Z', 123456, 1, '2024-03-15T12:35:00Z', 'public', 't', 'INSERT', 'duplicate key'),
		(1001, '2024-03-15T12:34:56Z', 123456, 2, '2024-03-15T12:35:00Z', 'public', 't', 'INSERT', 'duplicate key')`)
	n2.Exec(t, fmt.Sprintf(`GRANT USAGE ON SCHEMA spock TO %[1]s; GRANT SELECT ON ALL TABLES IN SCHEMA spock TO %[1]s;
		GRANT INSERT, UPDATE ON spock.exception_status, spock.exception_status_detail TO %[1]s`, e.alice))
	alice := e.as(t, e.alice)
	id := submit(t, alice, e.url+"/api/v1/spock/exception-sync", map[string]any{"nodes": "n2"})
	task := waitTask(t, alice, e.url+"/api/v1/tasks/"+id)
	require.Equal(t, "COMPLETED", task["status"], "%v", task)

	statuses := func() string {
		var s string
		require.NoError(t, n2.Pool.QueryRow(context.Background(), `SELECT string_agg(x, ' ' ORDER BY x) FROM (
			SELECT 'status:' || status || coalesce(':' || (resolution_details->>'details'), '') AS x FROM spock.exception_status
			UNION ALL SELECT command_counter || ':' || status FROM spock.exception_status_detail) s`).Scan(&s))
		return s
	}
	require.Equal(t, "1:PENDING 2:PENDING status:PENDING", statuses())

	t.Run("the seed's route with command_counter updates that command only, synchronously", func(t *testing.T) {
		r := post(t, alice, e.url+"/ace/update-spock-exception", map[string]any{
			"cluster_name": "my_cluster", "node_name": "n2", "dbname": e.DB,
			"exception_details": map[string]any{"remote_origin": "1001", "remote_commit_ts": "2024-03-15T12:34:56Z",
				"remote_xid": "123456", "command_counter": 2, "status": "IGNORED"}})
		require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
		require.Equal(t, "Exception status updated successfully", r.json(t)["message"])
		require.Equal(t, "1:PENDING 2:IGNORED status:PENDING", statuses())
	})
	t.Run("the seed's route without node_name is refused", func(t *testing.T) {
		r := post(t, alice, e.url+"/ace/update-spock-exception", map[string]any{
			"cluster_name": "my_cluster", "exception_details": map[string]any{"remote_origin": "1001",
				"remote_commit_ts": "2024-03-15T12:34:56Z", "remote_xid": "123456", "status": "RESOLVED"}})
		require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t)["error"], "node_name is required")
		require.Equal(t, "1:PENDING 2:IGNORED status:PENDING", statuses())
	})
	t.Run("the seed's route refuses node_name given twice", func(t *testing.T) {
		r := post(t, alice, e.url+"/ace/update-spock-exception", map[string]any{
			"node_name": "n2", "exception_details": map[string]any{"node_name": "n1", "remote_origin": "1001",
				"remote_commit_ts": "2024-03-15T12:34:56Z", "remote_xid": "123456", "status": "RESOLVED"}})
		require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t)["error"], "given twice")
	})
	t.Run("the seed's route answers 400 for an exception that is not there", func(t *testing.T) {
		r := post(t, alice, e.url+"/ace/update-spock-exception", map[string]any{
			"cluster_name": "my_cluster", "node_name": "n2", "exception_details": map[string]any{"remote_origin": "1001",
				"remote_commit_ts": "2024-03-15T12:34:57Z", "remote_xid": "123456", "status": "RESOLVED"}})
		require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t)["error"], "no Spock exception on node n2")
	})
	t.Run("the API route without command_counter updates the exception and all its commands", func(t *testing.T) {
		id := submit(t, alice, e.url+"/api/v1/spock/exception-update", map[string]any{
			"node_name": "n2", "remote_origin": 1001, "remote_commit_ts": "2024-03-15T12:34:56Z", "remote_xid": 123456,
			"status": "RESOLVED", "resolution_details": map[string]any{"details": "Issue fixed"}})
		task := waitTask(t, alice, e.url+"/api/v1/tasks/"+id)
		require.Equal(t, "COMPLETED", task["status"], "%v", task)
		require.Equal(t, "1:RESOLVED 2:RESOLVED status:RESOLVED:Issue fixed", statuses())
	})
}
