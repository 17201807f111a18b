package agent_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/internal/pglogicaltest"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// repsetDiff submits ace.repset_diff on n1 and waits for the task to end.
func (e *diffEnv) repsetDiff(args string) (uuid.UUID, sqlapi.Task) {
	e.t.Helper()
	n1 := e.Node("n1")
	var id uuid.UUID
	require.NoError(e.t, n1.Pool.QueryRow(context.Background(), `SELECT ace.repset_diff(`+args+`)`).Scan(&id))
	return id, n1.Wait(e.t, id)
}

func completedResult(t *testing.T, task sqlapi.Task) map[string]any {
	t.Helper()
	require.Equal(t, sqlapi.StatusCompleted, task.Status, "task error: %v", task.Error)
	var result map[string]any
	require.NoError(t, json.Unmarshal(task.Result, &result))
	return result
}

// A publication with a row filter: a change inside the filter is reported, one outside it is
// not; a table dropped from the publication on one node is missing there; a table whose filter
// differs between nodes fails; skip_tables leaves a member out; FOR ALL TABLES lists them all.
func TestRepsetDiffOnPublications(t *testing.T) {
	t.Parallel()
	e := setup(t, `
		CREATE TABLE public.filtered (id int PRIMARY KEY, v text);
		CREATE TABLE public.plain (id int PRIMARY KEY, v text);
		CREATE TABLE public.dropped (id int PRIMARY KEY, v text);
		CREATE TABLE public.refiltered (id int PRIMARY KEY, v text);
		CREATE TABLE public.skipme (id int PRIMARY KEY, v text);
		CREATE TABLE public.outside (id int PRIMARY KEY, v text);
		INSERT INTO filtered SELECT g, 'v' || g FROM generate_series(1, 200) g;
		INSERT INTO plain SELECT g, 'v' || g FROM generate_series(1, 50) g;
		INSERT INTO dropped SELECT g, 'v' || g FROM generate_series(1, 50) g;
		INSERT INTO refiltered SELECT g, 'v' || g FROM generate_series(1, 50) g;
		INSERT INTO skipme SELECT g, 'v' || g FROM generate_series(1, 50) g;
		CREATE PUBLICATION pub FOR TABLE public.filtered WHERE (id <= 100), public.plain, public.dropped,
			public.refiltered WHERE (id < 10), public.skipme;
		CREATE PUBLICATION everything FOR ALL TABLES;`)
	e.Node("n2").Exec(t, `UPDATE filtered SET v = 'changed' WHERE id IN (5, 150)`)
	e.Node("n3").Exec(t, `DELETE FROM skipme WHERE id = 1`)
	e.Node("n3").Exec(t, `ALTER PUBLICATION pub DROP TABLE public.dropped`)
	e.Node("n2").Exec(t, `ALTER PUBLICATION pub SET TABLE public.filtered WHERE (id <= 100), public.plain, public.dropped,
		public.refiltered WHERE (id < 20), public.skipme`)
	e.Node("n1").Exec(t, `INSERT INTO outside VALUES (1, 'only n1')`)

	t.Run("row filter, missing, different filters, skip", func(t *testing.T) {
		id, task := e.repsetDiff(`'pub', skip_tables => ARRAY['skipme']`)
		result := completedResult(t, task)
		require.Equal(t, "pub", result["repset"])
		require.Equal(t, map[string]any{"n1": "native", "n2": "native", "n3": "native"}, result["providers"])
		require.EqualValues(t, 4, result["tables_total"])
		require.Equal(t, []any{"public.plain"}, result["identical"])
		require.Equal(t, []any{"skipme"}, result["skipped"])
		require.Equal(t, []any{map[string]any{"table": "public.dropped", "present_on": []any{"n1", "n2"}, "missing_from": []any{"n3"}}}, result["missing"])
		failed := result["failed"].([]any)
		require.Len(t, failed, 1)
		require.Equal(t, "public.refiltered", failed[0].(map[string]any)["table"])
		require.Contains(t, failed[0].(map[string]any)["error"], "n2: (id < 20)")
		differed := result["differed"].([]any)
		require.Len(t, differed, 1)
		d := differed[0].(map[string]any)
		require.Equal(t, "public.filtered", d["table"])
		require.EqualValues(t, 1, d["differing_keys"], "only id 5 is inside the row filter")
		require.Equal(t, map[string]any{"row_filter": "(id <= 100)", "table_filter": "((id <= 100))"},
			result["tables"].(map[string]any)["public.filtered"])

		child := uuid.MustParse(d["task_id"].(string))
		var args map[string]any
		childTask, err := sqlapi.GetTask(context.Background(), e.Node("n1").Pool, child)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(childTask.Args, &args))
		require.Equal(t, id.String(), args["parent_task"])
		require.Len(t, e.diffRows(child), 1)
	})

	t.Run("the user's table_filter is ANDed with the row filter", func(t *testing.T) {
		_, task := e.repsetDiff(`'pub', skip_tables => ARRAY['public.skipme'], table_filter => 'id > 5'`)
		result := completedResult(t, task)
		require.Empty(t, result["differed"], "id 5 is outside id > 5, id 150 outside the row filter")
		require.Equal(t, map[string]any{"row_filter": "(id <= 100)", "table_filter": "(id > 5) AND ((id <= 100))"},
			result["tables"].(map[string]any)["public.filtered"])
	})

	t.Run("FOR ALL TABLES", func(t *testing.T) {
		_, task := e.repsetDiff(`'everything', provider => 'native'`)
		result := completedResult(t, task)
		require.EqualValues(t, 6, result["tables_total"])
		require.Empty(t, result["missing"])
		require.Len(t, result["differed"], 3, "filtered (ids 5 and 150, no filter here), skipme and outside")
		require.NotContains(t, result["tables"], "ace.tasks", "the agent's own schema is not diffed")
	})

	t.Run("a set found on no node", func(t *testing.T) {
		_, task := e.repsetDiff(`'nosuchset'`)
		require.Equal(t, sqlapi.StatusFailed, task.Status)
		require.Contains(t, *task.Error, "spock.replication_set, pglogical.replication_set and pg_publication")
	})
}

// On the suite's pglogical cluster: the set's tables are read from pglogical's catalog; a table
// removed from the set on one node is missing there; a row filter set on one node only fails
// the table, and one set on every node is ANDed into its diff.
func TestRepsetDiffOnPglogical(t *testing.T) {
	t.Parallel()
	c := pglogicaltest.Start(t, 3, "repl", `CREATE TABLE public.acct (id bigint PRIMARY KEY, v text);
		CREATE TABLE public.other (id bigint PRIMARY KEY, v text)`)
	var instances []*localpg.Instance
	for _, n := range c.Nodes {
		instances = append(instances, n.Instance)
	}
	e := envOn(t, instances, c.DB)

	_, task := e.repsetDiff(`'default', skip_tables => ARRAY['pglogicaltest.ace_test_marker']`)
	result := completedResult(t, task)
	require.Equal(t, map[string]any{"n1": "pglogical", "n2": "pglogical", "n3": "pglogical"}, result["providers"])
	require.Equal(t, []any{"public.acct", "public.other"}, result["identical"])

	c.Node("n2").Exec(t, `SELECT pglogical.replication_set_remove_table('default', 'public.acct')`)
	c.Node("n1").Exec(t, `SELECT pglogical.replication_set_remove_table('default', 'public.other')`)
	c.Node("n1").Exec(t, `SELECT pglogical.replication_set_add_table('default', 'public.other', row_filter := 'id <= 100')`)
	_, task = e.repsetDiff(`'default', provider => 'pglogical', skip_tables => ARRAY['ace_test_marker']`)
	result = completedResult(t, task)
	require.Equal(t, []any{map[string]any{"table": "public.acct", "present_on": []any{"n1", "n3"}, "missing_from": []any{"n2"}}}, result["missing"])
	failed := result["failed"].([]any)
	require.Len(t, failed, 1)
	require.Equal(t, "public.other", failed[0].(map[string]any)["table"])
	require.Contains(t, failed[0].(map[string]any)["error"], "n1: (id <= 100); n2: (every row)")

	for _, n := range []string{"n2", "n3"} {
		c.Node(n).Exec(t, `SELECT pglogical.replication_set_remove_table('default', 'public.other')`)
		c.Node(n).Exec(t, `SELECT pglogical.replication_set_add_table('default', 'public.other', row_filter := 'id <= 100')`)
	}
	_, task = e.repsetDiff(`'default', skip_tables => ARRAY['ace_test_marker']`)
	result = completedResult(t, task)
	require.Equal(t, []any{"public.other"}, result["identical"])
	require.Equal(t, map[string]any{"row_filter": "(id <= 100)", "table_filter": "((id <= 100))"},
		result["tables"].(map[string]any)["public.other"])
}

// A publication's column list limits the compared columns (the key is always compared): a change
// in a column the set does not replicate is not drift. The list is recorded per table, and a list
// that differs between the nodes fails the table.
func TestRepsetDiffAppliesColumnLists(t *testing.T) {
	t.Parallel()
	e := setup(t, `
		CREATE TABLE public.narrow (id int PRIMARY KEY, a text, b text, c text);
		CREATE TABLE public.relisted (id int PRIMARY KEY, a text, b text);
		INSERT INTO narrow SELECT g, 'a' || g, 'b' || g, 'c' || g FROM generate_series(1, 100) g;
		INSERT INTO relisted SELECT g, 'a' || g, 'b' || g FROM generate_series(1, 10) g;
		CREATE PUBLICATION cols FOR TABLE public.narrow (id, c, a), public.relisted (id, a);`)
	e.Node("n2").Exec(t, `UPDATE narrow SET b = 'not replicated' WHERE id = 2`)
	e.Node("n3").Exec(t, `UPDATE narrow SET a = 'replicated' WHERE id = 3`)
	e.Node("n2").Exec(t, `ALTER PUBLICATION cols SET TABLE public.narrow (id, c, a), public.relisted (id, a, b)`)

	_, task := e.repsetDiff(`'cols'`)
	result := completedResult(t, task)
	differed := result["differed"].([]any)
	require.Len(t, differed, 1)
	d := differed[0].(map[string]any)
	require.Equal(t, "public.narrow", d["table"])
	require.EqualValues(t, 1, d["differing_keys"], "only id 3: b is not in the column list")
	require.Equal(t, map[string]any{"row_filter": "", "columns": []any{"id", "a", "c"}},
		result["tables"].(map[string]any)["public.narrow"])
	child := e.diffRows(uuid.MustParse(d["task_id"].(string)))
	require.Equal(t, map[string]any{"id": float64(3), "a": "a3", "c": "c3"}, child[`{"id": 3}`].Rows["n1"], "the diff holds the listed columns")

	failed := result["failed"].([]any)
	require.Len(t, failed, 1)
	require.Equal(t, "public.relisted", failed[0].(map[string]any)["table"])
	require.Contains(t, failed[0].(map[string]any)["error"], "n2: id, a, b")
}

// On tables created from Spock 5's own definitions: the set's members are read from
// spock.replication_set_table on every node (the set of the local node, not a peer's set of the
// same name); a table in the set on two nodes only is missing on the third, and the common
// tables are still diffed, a set_att_list limiting the compared columns.
func TestRepsetDiffOnSpock(t *testing.T) {
	t.Parallel()
	e := setup(t, `
		CREATE TABLE public.orders (id int PRIMARY KEY, v text, note text);
		CREATE TABLE public.items (id int PRIMARY KEY, v text);
		CREATE TABLE public.extra (id int PRIMARY KEY, v text);
		INSERT INTO orders SELECT g, 'v' || g, 'n' || g FROM generate_series(1, 100) g;
		INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 100) g;
		INSERT INTO extra SELECT g, 'v' || g FROM generate_series(1, 10) g;`)
	for i, name := range []string{"n1", "n2", "n3"} {
		n := e.Node(name)
		n.CreateSpockTables(t)
		self := i + 1
		n.Exec(t, `INSERT INTO spock.node SELECT i, 'n' || i FROM generate_series(1, 3) i;
			INSERT INTO spock.node_interface SELECT 10 + i, 'n' || i, i, 'host=n' || i FROM generate_series(1, 3) i`)
		n.Exec(t, `INSERT INTO spock.local_node VALUES ($1::int, 10 + $1::int)`, self)
		// Each node's own set, and a peer's set of the same name that must not count.
		n.Exec(t, `INSERT INTO spock.replication_set (set_id, set_nodeid, set_name) VALUES (100 + $1::int, $1::int, 'default'),
			(200 + $1::int, $2::int, 'default')`, self, self%3+1)
		n.Exec(t, `INSERT INTO spock.replication_set_table (set_id, set_reloid, set_att_list) VALUES
			(100 + $1::int, 'public.orders', ARRAY['id', 'v']), (100 + $1::int, 'public.items', NULL),
			(200 + $1::int, 'public.extra', NULL)`, self)
	}
	// The asymmetric member: extra is in n1's and n2's own set, not in n3's.
	for i, name := range []string{"n1", "n2"} {
		e.Node(name).Exec(t, `INSERT INTO spock.replication_set_table (set_id, set_reloid) VALUES (100 + $1::int, 'public.extra')`, i+1)
	}
	e.Node("n2").Exec(t, `UPDATE orders SET note = 'not replicated' WHERE id = 1`)
	e.Node("n2").Exec(t, `UPDATE orders SET v = 'drift' WHERE id = 2`)
	e.Node("n3").Exec(t, `DELETE FROM items WHERE id = 3`)
	e.Node("n1").Exec(t, `UPDATE extra SET v = 'only n1' WHERE id = 4`)

	_, task := e.repsetDiff(`'default'`)
	result := completedResult(t, task)
	require.Equal(t, map[string]any{"n1": "spock", "n2": "spock", "n3": "spock"}, result["providers"])
	require.EqualValues(t, 3, result["tables_total"])
	require.Equal(t, []any{map[string]any{"table": "public.extra", "present_on": []any{"n1", "n2"}, "missing_from": []any{"n3"}}}, result["missing"])
	require.Empty(t, result["failed"])
	differing := map[string]any{}
	for _, d := range result["differed"].([]any) {
		differing[d.(map[string]any)["table"].(string)] = d.(map[string]any)["differing_keys"]
	}
	require.Equal(t, map[string]any{"public.orders": float64(1), "public.items": float64(1)}, differing,
		"orders: id 2 only, note is not in set_att_list; items: id 3")
	require.Equal(t, map[string]any{"row_filter": "", "columns": []any{"id", "v"}}, result["tables"].(map[string]any)["public.orders"])
}
