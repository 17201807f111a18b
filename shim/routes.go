package shim

import (
	"encoding/json"
	"strings"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// A field maps one REST body field onto the task's args. This file is the one place where REST
// fields meet task arguments; the arguments are judged by the SQL validators, not here.
type field struct {
	rest string
	// arg is the args key (the SQL argument name, the JSON name in sqlapi's args types). Empty:
	// an ACE field accepted for compatibility that means nothing here (cluster, dbname, quiet:
	// the cluster is the one the local node's ace.nodes lists, the database the shim's own).
	arg  string
	conv convert
	// unsupported fields are refused unless absent or false/empty: ignoring a repair plan or
	// preserve_origin would repair differently from what was asked.
	unsupported bool
	// nested: the value is a JSON object whose members are args under their own names (the
	// seed's exception_details).
	nested bool
	// objectArg, when set, is the args key of the value when it is a JSON object (ACE's
	// repair_plan: a plan object goes to plan, a saved plan's name to repair_plan).
	objectArg string
}

// convert turns a REST value into the args value; ok=false leaves the argument out.
type convert func(json.RawMessage) (v json.RawMessage, ok bool)

// A submitRoute is a POST route that inserts one task.
type submitRoute struct {
	path     string
	taskType sqlapi.TaskType
	fields   []field
}

func arg(rest, name string) field { return field{rest: rest, arg: name} }
func same(names ...string) []field {
	return fieldsFor(names, func(n string) field { return arg(n, n) })
}
func ignored(names ...string) []field {
	return fieldsFor(names, func(n string) field { return field{rest: n} })
}
func unsupported(names ...string) []field {
	return fieldsFor(names, func(n string) field { return field{rest: n, unsupported: true} })
}
func fieldsFor(names []string, f func(string) field) []field {
	out := make([]field, len(names))
	for i, n := range names {
		out[i] = f(n)
	}
	return out
}

// nodesField takes ACE's node lists: a JSON array (ACE Go; empty means all) or a comma list
// (the Python seed; "all" means all). All nodes is the SQL default, so it leaves nodes out.
var nodesField = field{rest: "nodes", arg: "nodes", conv: nodesArg}

// diffFileField names the diff a repair or rerun acts on: a task id, or an uploaded ACE diff
// file, which the handler imports first (as ace.diff_import does) and replaces by its task id.
var diffFileField = arg("diff_file", "diff_task")

// repairPlanField is ACE's repair_plan: a plan object (ACE's format as JSON) or a saved plan's
// name.
var repairPlanField = field{rest: "repair_plan", arg: "repair_plan", objectArg: "plan"}

// join concatenates field lists.
func join(lists ...[]field) []field {
	var out []field
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// repairFlags are the repair options whose names ACE, the seed and ace.table_repair share.
var repairFlags = same("source_of_truth", "dry_run", "insert_only", "upsert_only", "fire_triggers",
	"generate_report", "fix_nulls", "bidirectional")

// submitRoutes are every POST route of sqlapi.TaskSpecs, with the fields aceFields maps, or,
// for a route aceFields does not list, the task type's own argument names.
var submitRoutes = routesOf(sqlapi.TaskSpecs)

func routesOf(specs []sqlapi.TaskSpec) []submitRoute {
	var routes []submitRoute
	for _, spec := range specs {
		for _, path := range spec.Routes {
			routes = append(routes, routeOf(spec, path))
		}
	}
	return routes
}

// queryRoutes are every GET route of sqlapi.TaskSpecs (fields as query parameters).
var queryRoutes = queryRoutesOf(sqlapi.TaskSpecs)

func queryRoutesOf(specs []sqlapi.TaskSpec) []submitRoute {
	var routes []submitRoute
	for _, spec := range specs {
		for _, path := range spec.QueryRoutes {
			routes = append(routes, routeOf(spec, path))
		}
	}
	return routes
}

func routeOf(spec sqlapi.TaskSpec, path string) submitRoute {
	fields, ok := aceFields[path]
	if !ok {
		fields = argFields(spec)
	}
	return submitRoute{path, spec.Type, fields}
}

// argFields are the fields of a route that takes its task type's arguments under their own
// names, and ignores ACE's fields that mean nothing here.
func argFields(spec sqlapi.TaskSpec) []field {
	fields := ignored("cluster", "dbname", "quiet")
	for _, name := range sqlapi.ArgNames(spec.Args()) {
		if name == nodesField.arg {
			fields = append(fields, nodesField)
			continue
		}
		fields = append(fields, arg(name, name))
	}
	return fields
}

// aceFields map the REST fields of ACE's routes (the Python seed's and ACE Go's) onto the
// task's arguments, where ACE's names differ from ours.
var aceFields = map[string][]field{
	// The Python seed's routes.
	"/ace/table-diff": join(
		[]field{arg("table_name", "table_name"), arg("block_rows", "block_size"),
			arg("max_cpu_ratio", "concurrency_factor"), nodesField},
		same("output", "table_filter"), ignored("cluster_name", "dbname", "batch_size", "quiet")),
	"/ace/table-repair": join(
		[]field{arg("table_name", "table_name"), diffFileField}, repairFlags, ignored("cluster_name", "dbname", "quiet")),
	"/ace/table-rerun": join(
		[]field{arg("table_name", "table_name"), diffFileField}, ignored("cluster_name", "dbname", "quiet", "behavior")),

	// ACE Go's routes.
	"/api/v1/table-diff": join(
		[]field{arg("table", "table_name"), nodesField},
		same("block_size", "concurrency_factor", "compare_unit_size", "max_diff_rows", "max_connections",
			"table_filter", "override_block_size", "columns"), ignored("cluster", "dbname", "quiet")),
	"/api/v1/table-rerun": join(
		// A rerun compares the diff's own nodes, so ACE's nodes has nothing to choose.
		[]field{diffFileField}, ignored("cluster", "dbname", "nodes", "quiet")),
	"/api/v1/table-repair": join(
		// nodes goes through to be refused by the SQL side, which names target_nodes instead.
		[]field{arg("table", "table_name"), diffFileField, nodesField, repairPlanField}, repairFlags,
		unsupported("preserve_origin"), ignored("cluster", "dbname", "quiet")),
	"/api/v1/mtree/build": join(
		[]field{arg("table", "table_name"), nodesField, arg("block_size", "leaf_rows")},
		ignored("cluster", "dbname", "quiet", "max_cpu_ratio", "override_block_size", "analyse",
			"recreate_objects", "write_ranges", "ranges_file")),
	"/api/v1/mtree/diff": join(
		[]field{arg("table", "table_name"), nodesField}, same("max_diff_rows", "output"),
		ignored("cluster", "dbname", "quiet", "max_cpu_ratio", "skip_update")),
	"/api/v1/mtree/teardown-table": join(
		[]field{arg("table", "table_name")}, ignored("cluster", "dbname", "nodes", "quiet")),
	"/api/v1/mtree/teardown": ignored("cluster", "dbname", "nodes", "quiet"),

	// spock-diff: ACE's file is always JSON, so output chooses nothing.
	"/ace/spock-diff":    join([]field{nodesField}, ignored("cluster_name", "dbname", "quiet", "output")),
	"/api/v1/spock-diff": join([]field{nodesField}, ignored("cluster", "dbname", "quiet", "output")),
	// The seed's Spock exception update: the exception's key and status in exception_details.
	"/ace/update-spock-exception": join(
		[]field{arg("node_name", "node_name"), {rest: "exception_details", nested: true}},
		ignored("cluster_name", "dbname")),
	// Schema diffs: ACE Go's POST route, and the Python API's GET route (query parameters).
	// skip_file names a path on the server, which the shim never opens: it is refused.
	"/api/v1/schema-diff": join(
		[]field{arg("schema", "schema_name"), nodesField},
		same("skip_tables", "ddl_only", "block_size", "concurrency_factor", "compare_unit_size", "max_connections",
			"override_block_size", "compare", "compare_privileges", "ignore_names", "table_filter", "max_diff_rows"),
		same("output"), unsupported("skip_file"), ignored("cluster", "dbname", "quiet")),
	"/ace/schema-diff": join(
		[]field{arg("schema_name", "schema_name"), nodesField, arg("block_rows", "block_size"),
			arg("max_cpu_ratio", "concurrency_factor")},
		same("skip_tables", "ddl_only", "compare", "compare_privileges", "ignore_names", "table_filter"),
		same("output"), unsupported("skip_file"), ignored("cluster_name", "dbname", "quiet", "batch_size")),
	// Replication-set diffs: ACE Go's POST route and the Python API's GET route; provider is ours.
	"/api/v1/repset-diff": join(
		[]field{arg("repset", "repset"), nodesField},
		same("skip_tables", "block_size", "concurrency_factor", "compare_unit_size", "max_connections",
			"override_block_size", "table_filter", "max_diff_rows", "provider"),
		same("output"), unsupported("skip_file"), ignored("cluster", "dbname", "quiet")),
	"/ace/repset-diff": join(
		[]field{arg("repset_name", "repset"), nodesField, arg("block_rows", "block_size"),
			arg("max_cpu_ratio", "concurrency_factor")},
		same("skip_tables", "table_filter", "provider"),
		same("output"), unsupported("skip_file"), ignored("cluster_name", "dbname", "quiet", "batch_size")),
}

// waitedRoutes answer only once their task has ended, with ACE's message when it completed: the
// seed's API answers so, synchronously.
var waitedRoutes = map[string]string{
	"/ace/update-spock-exception": "Exception status updated successfully",
}

// nodesArg reads ACE's node lists; see nodesField. Any other JSON goes through unchanged, for
// the SQL side to judge.
func nodesArg(v json.RawMessage) (json.RawMessage, bool) {
	var list []string
	if json.Unmarshal(v, &list) == nil {
		return v, len(list) > 0
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return v, true
	}
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "all") {
		return nil, false
	}
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			list = append(list, n)
		}
	}
	raw, _ := json.Marshal(list)
	return raw, true
}

// isZero reports a JSON value that asks for nothing: null, false, "", 0, [] or {}.
func isZero(v json.RawMessage) bool {
	switch strings.TrimSpace(string(v)) {
	case "null", "false", `""`, "0", "[]", "{}":
		return true
	}
	return false
}
