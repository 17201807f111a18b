package shim

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/sqlapi"
)

func route(t *testing.T, path string) submitRoute {
	t.Helper()
	for _, rt := range submitRoutes {
		if rt.path == path {
			return rt
		}
	}
	t.Fatalf("no route %s", path)
	return submitRoute{}
}

// mapArgs maps a JSON body through the route's table and returns the args as JSON.
func mapArgs(t *testing.T, path, body string) string {
	t.Helper()
	var b map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(body), &b))
	args, upload, err := route(t, path).args(b)
	require.NoError(t, err)
	require.Nil(t, upload)
	raw, err := json.Marshal(args)
	require.NoError(t, err)
	return string(raw)
}

func TestMtreeRoutesMapOntoTheirTaskArgs(t *testing.T) {
	t.Parallel()
	cases := []struct{ path, body, taskType, args string }{
		{"/api/v1/mtree/build", `{"cluster": "c", "table": "public.t", "nodes": ["n1", "n2"], "block_size": 5000, "max_cpu_ratio": 0.5, "analyse": true}`,
			"mtree-build", `{"leaf_rows":5000,"nodes":["n1","n2"],"table_name":"public.t"}`},
		{"/api/v1/mtree/diff", `{"table": "public.t", "nodes": [], "max_diff_rows": 10, "output": "json", "skip_update": true}`,
			"mtree-diff", `{"max_diff_rows":10,"output":"json","table_name":"public.t"}`},
		{"/api/v1/mtree/teardown-table", `{"cluster": "c", "table": "public.t", "quiet": true}`,
			"mtree-teardown", `{"table_name":"public.t"}`},
		{"/api/v1/mtree/teardown", `{"cluster": "c", "nodes": ["n1"]}`, "mtree-teardown", `{}`},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, c.taskType, string(route(t, c.path).taskType))
			require.JSONEq(t, c.args, mapArgs(t, c.path, c.body))
		})
	}
}

func TestACERoutesMapOntoTheSQLArguments(t *testing.T) {
	t.Parallel()
	t.Run("python table-diff", func(t *testing.T) {
		t.Parallel()
		require.JSONEq(t, `{"table_name":"public.t","block_size":5000,"concurrency_factor":0.8,"nodes":["n1","n2"],"output":"html","table_filter":"id < 10"}`,
			mapArgs(t, "/ace/table-diff", `{"cluster_name": "c", "table_name": "public.t", "dbname": "app", "block_rows": 5000,
				"max_cpu_ratio": 0.8, "output": "html", "nodes": "n1, n2", "batch_size": 50, "table_filter": "id < 10", "quiet": true}`))
	})
	t.Run("nodes all", func(t *testing.T) {
		t.Parallel()
		require.JSONEq(t, `{"table_name":"public.t"}`, mapArgs(t, "/ace/table-diff", `{"table_name": "public.t", "nodes": "all"}`))
	})
	t.Run("go table-diff with our columns", func(t *testing.T) {
		t.Parallel()
		require.JSONEq(t, `{"table_name":"public.t","columns":["status","amount"]}`,
			mapArgs(t, "/api/v1/table-diff", `{"cluster": "c", "table": "public.t", "columns": ["status", "amount"]}`))
	})
	t.Run("go table-repair", func(t *testing.T) {
		t.Parallel()
		require.JSONEq(t, `{"table_name":"public.t","diff_task":"x","source_of_truth":"n1","dry_run":true}`,
			mapArgs(t, "/api/v1/table-repair", `{"cluster": "c", "table": "public.t", "diff_file": "x", "source_of_truth": "n1", "dry_run": true, "preserve_origin": false}`))
	})
	t.Run("repair_plan: a plan object or a saved plan's name", func(t *testing.T) {
		t.Parallel()
		require.JSONEq(t, `{"table_name":"public.t","diff_task":"x","plan":{"tables":{"public.t":{"default_action":{"type":"keep_n1"}}}}}`,
			mapArgs(t, "/api/v1/table-repair", `{"table": "public.t", "diff_file": "x", "repair_plan": {"tables": {"public.t": {"default_action": {"type": "keep_n1"}}}}}`))
		require.JSONEq(t, `{"table_name":"public.t","diff_task":"x","repair_plan":"nightly"}`,
			mapArgs(t, "/api/v1/table-repair", `{"table": "public.t", "diff_file": "x", "repair_plan": "nightly"}`))
	})
	t.Run("unknown and unsupported fields", func(t *testing.T) {
		t.Parallel()
		_, _, err := route(t, "/api/v1/table-repair").args(map[string]json.RawMessage{"sorce_of_truth": json.RawMessage(`"n1"`)})
		require.ErrorContains(t, err, `unknown field "sorce_of_truth"`)
		_, _, err = route(t, "/api/v1/table-repair").args(map[string]json.RawMessage{"preserve_origin": json.RawMessage(`true`)})
		require.ErrorContains(t, err, "not supported")
	})
	t.Run("uploaded diff file", func(t *testing.T) {
		t.Parallel()
		args, upload, err := route(t, "/ace/table-rerun").args(map[string]json.RawMessage{"diff_file": json.RawMessage(`{"diffs": {}}`)})
		require.NoError(t, err)
		require.Empty(t, args)
		require.JSONEq(t, `{"diffs": {}}`, string(upload))
	})
}

// Every argument the diff, rerun and repair routes produce is an argument of the SQL function,
// as sqlapi's args types name them.
func TestRouteArgumentsAreSQLArguments(t *testing.T) {
	t.Parallel()
	types := map[sqlapi.TaskType]any{sqlapi.TypeTableDiff: sqlapi.TableDiffArgs{},
		sqlapi.TypeTableRerun: sqlapi.TableRerunArgs{}, sqlapi.TypeTableRepair: sqlapi.TableRepairArgs{}}
	for _, rt := range submitRoutes {
		argsType, ok := types[rt.taskType]
		if !ok {
			continue
		}
		names := jsonNames(argsType)
		for _, f := range rt.fields {
			if f.arg != "" && !(rt.taskType == sqlapi.TypeTableRepair && f.arg == "nodes") {
				require.Contains(t, names, f.arg, "%s: field %s", rt.path, f.rest)
			}
			if f.objectArg != "" {
				require.Contains(t, names, f.objectArg, "%s: field %s", rt.path, f.rest)
			}
		}
	}
}

func jsonNames(v any) []string { return sqlapi.ArgNames(v) }

// Every ACE field mapping belongs to a route of the task registry: a mapping of a route the
// registry does not name would never be served.
func TestACEFieldsAreRegistryRoutes(t *testing.T) {
	t.Parallel()
	var routes []string
	for _, spec := range sqlapi.TaskSpecs {
		routes = append(routes, spec.Routes...)
		routes = append(routes, spec.QueryRoutes...)
	}
	for path := range aceFields {
		require.Contains(t, routes, path, "aceFields maps %s, which no sqlapi.TaskSpecs entry routes", path)
	}
}

// A task type whose routes need no ACE mapping gets them from its registry entry alone: the
// body's fields are its argument names, ACE's node lists are read, and ACE's cluster fields
// are ignored.
func TestRegistryRouteWithoutACEFieldsTakesTheArgumentNames(t *testing.T) {
	t.Parallel()
	spec := sqlapi.TaskSpec{Type: "example-diff", Args: func() any { return new(sqlapi.DiffArgs) },
		Routes: []string{"/api/v1/example-diff"}}
	routes := routesOf([]sqlapi.TaskSpec{spec})
	require.Len(t, routes, 1)
	rt := routes[0]
	require.Equal(t, "/api/v1/example-diff", rt.path)
	require.Equal(t, spec.Type, rt.taskType)
	var body map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(`{"cluster": "c", "table_name": "public.t", "nodes": "n1, n2", "max_diff_rows": 5}`), &body))
	args, upload, err := rt.args(body)
	require.NoError(t, err)
	require.Nil(t, upload)
	raw, err := json.Marshal(args)
	require.NoError(t, err)
	require.JSONEq(t, `{"table_name": "public.t", "nodes": ["n1", "n2"], "max_diff_rows": 5}`, string(raw))
	_, _, err = rt.args(map[string]json.RawMessage{"block_size": json.RawMessage("5")})
	require.ErrorContains(t, err, `unknown field "block_size"`)
}
