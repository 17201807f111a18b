package spockdiff_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/spockdiff"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// spockCatalog is Spock 5's own catalog DDL (see the file's header).
func spockCatalog(t *testing.T) string {
	raw, err := os.ReadFile("../../testdata/spock/spock5_catalog.sql")
	require.NoError(t, err)
	return string(raw)
}

// spockNode fills the stubbed Spock catalog of one node as Spock would for a three-node mesh:
// the three nodes (ids 1..3, interfaces 11..13), this one local, a subscription from each node
// in from (enabled as given) to the sets default and ddl_sql, and the local node's sets.
func spockNode(t *testing.T, n *testcluster.Node, self int, from map[int]bool, sets map[string][]string) {
	t.Helper()
	n.Exec(t, spockCatalog(t))
	n.Exec(t, `INSERT INTO spock.node SELECT i, 'n' || i FROM generate_series(1, 3) i;
		INSERT INTO spock.node_interface SELECT 10 + i, 'n' || i, i, 'host=n' || i FROM generate_series(1, 3) i`)
	n.Exec(t, `INSERT INTO spock.local_node VALUES ($1::int, 10 + $1::int)`, self)
	for origin, enabled := range from {
		n.Exec(t, `INSERT INTO spock.subscription (sub_id, sub_name, sub_origin, sub_target, sub_origin_if, sub_target_if,
				sub_enabled, sub_slot_name, sub_replication_sets, sub_forward_origins)
			VALUES (100 + $1::int, format('sub_n%sn%s', $2::int, $1::int), $1::int, $2::int, 10 + $1::int, 10 + $2::int, $3,
				format('spk_db_n%s_sub_n%sn%s', $1::int, $2::int, $1::int), '{default,ddl_sql}', '{}')`, origin, self, enabled)
	}
	id := 0
	for set, tables := range sets {
		id++
		n.Exec(t, `INSERT INTO spock.replication_set (set_id, set_nodeid, set_name) VALUES ($1, $2, $3)`, 1000+id, self, set)
		for _, tbl := range tables {
			n.Exec(t, `INSERT INTO spock.replication_set_table (set_id, set_reloid) VALUES ($1, $2::regclass)`, 1000+id, tbl)
		}
	}
	// Another node's set, which Spock's catalog also lists: not this node's placement.
	n.Exec(t, `INSERT INTO spock.replication_set (set_id, set_nodeid, set_name) VALUES (9000, $1, 'remote')`, self%3+1)
	n.Exec(t, `INSERT INTO spock.replication_set_table VALUES (9000, 'public.t2'::regclass)`)
}

func run(t *testing.T, e *testcluster.Env) *spockdiff.Result {
	t.Helper()
	r, err := spockdiff.Run(context.Background(), e.EngineNodes(2))
	require.NoError(t, err)
	return r
}

func TestSpockCatalog(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	e.ExecAll(`CREATE TABLE public.t1 (id int PRIMARY KEY); CREATE TABLE public.t2 (id int PRIMARY KEY)`)
	both := []string{"public.t1", "public.t2"}
	spockNode(t, e.Node("n1"), 1, map[int]bool{2: true, 3: true}, map[string][]string{"default": both, "extra": {"public.t1"}, "ddl_sql": {}})
	spockNode(t, e.Node("n2"), 2, map[int]bool{1: true, 3: true}, map[string][]string{"default": both, "extra": {"public.t1"}})
	// n3: its subscription to n1 is disabled, it has none to n2, and t1 is only in default.
	spockNode(t, e.Node("n3"), 3, map[int]bool{1: false}, map[string][]string{"default": both})
	r := run(t, e)

	require.Equal(t, spockdiff.ProviderSpock, r.Provider)
	n1 := r.SpockConfig["n1"]
	require.Equal(t, "n1", n1.NodeName)
	require.Equal(t, map[string][]string{"public.t1": {"default", "extra"}, "public.t2": {"default"}}, n1.TableSets,
		"every set a table is in, and only the local node's sets")
	require.Equal(t, []spockdiff.RepSet{{SetName: "ddl_sql", RelName: []string{}}, {SetName: "default", RelName: both}, {SetName: "extra", RelName: []string{"public.t1"}}}, n1.RepSetInfo)
	require.Equal(t, spockdiff.Subscription{SubName: "sub_n1n2", ProviderNode: "n2", SubEnabled: true,
		ReplicationSets: []string{"ddl_sql", "default"}, ForwardOrigins: []string{}, SlotName: "spk_db_n2_sub_n1n2"}, n1.Subscriptions[0])

	require.False(t, r.Diffs["n1/n2"].Mismatch, "%+v", r.Diffs["n1/n2"])
	require.Empty(t, r.Diffs["n1/n2"].Details.ReplicationSets.TablePlacementDiffs)

	d13 := r.Diffs["n1/n3"]
	require.True(t, d13.Mismatch)
	require.Empty(t, d13.Details.Subscriptions.MissingOnNode1)
	require.Empty(t, d13.Details.Subscriptions.MissingOnNode2)
	require.Len(t, d13.Details.Subscriptions.Different, 1)
	require.Equal(t, "sub_n1n3", d13.Details.Subscriptions.Different[0].Node1.SubName)
	require.False(t, d13.Details.Subscriptions.Different[0].Node2.SubEnabled)
	require.Equal(t, []spockdiff.TablePlacement{{TableName: "public.t1", Node1RepSet: "default, extra", Node2RepSet: "default"}},
		d13.Details.ReplicationSets.TablePlacementDiffs)

	d23 := r.Diffs["n2/n3"]
	require.True(t, d23.Mismatch)
	require.Empty(t, d23.Details.Subscriptions.MissingOnNode1, "n2 subscribes to n3")
	require.Equal(t, []string{"a subscription on n3 to n2"}, d23.Details.Subscriptions.MissingOnNode2)
}

// TestNativeReplication compares PostgreSQL's own publications and subscriptions: real
// subscriptions between the test nodes, whose providers are found by their slots.
func TestNativeReplication(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	e.ExecAll(`CREATE TABLE public.t1 (id int PRIMARY KEY); CREATE TABLE public.t2 (id int PRIMARY KEY);
		CREATE TABLE public.t3 (id int PRIMARY KEY)`)
	n1, n2 := e.Node("n1"), e.Node("n2")
	for _, n := range []*testcluster.Node{n1, n2} {
		n.Exec(t, `CREATE PUBLICATION pub_main FOR TABLE public.t1, public.t2`)
	}
	n1.Exec(t, `CREATE PUBLICATION pub_more FOR TABLE public.t1, public.t3`)
	subscribe := func(on, from *testcluster.Node, pubs string) {
		name := fmt.Sprintf("sub_%s_from_%s_%s", on.Name, from.Name, e.DB)
		on.Exec(t, fmt.Sprintf(`CREATE SUBSCRIPTION %s CONNECTION '%s' PUBLICATION %s WITH (copy_data = false)`, name, from.DSN, pubs))
		t.Cleanup(func() { _, _ = on.Pool.Exec(context.Background(), `DROP SUBSCRIPTION `+name) })
	}
	subscribe(n1, n2, "pub_main")
	subscribe(n2, n1, "pub_main")

	r := run(t, e)
	require.Equal(t, spockdiff.ProviderNative, r.Provider)
	c1 := r.SpockConfig["n1"]
	require.Equal(t, "n2", c1.Subscriptions[0].ProviderNode, "found by its slot on n2")
	require.Equal(t, []string{"pub_main"}, c1.Subscriptions[0].ReplicationSets)
	require.Equal(t, []string{"pub_main", "pub_more"}, c1.TableSets["public.t1"])

	d12 := r.Diffs["n1/n2"]
	require.True(t, d12.Mismatch)
	require.Empty(t, d12.Details.Subscriptions.Different)
	require.Equal(t, []spockdiff.TablePlacement{
		{TableName: "public.t1", Node1RepSet: "pub_main, pub_more", Node2RepSet: "pub_main"},
		{TableName: "public.t3", Node1RepSet: "pub_more", Node2RepSet: spockdiff.NotInAnySet},
	}, d12.Details.ReplicationSets.TablePlacementDiffs)
	// n3 neither publishes nor subscribes.
	require.Equal(t, []string{"a subscription on n1 to n3"}, r.Diffs["n1/n3"].Details.Subscriptions.MissingOnNode1)
	require.Contains(t, r.SpockConfig["n3"].Hints, "No subscriptions have been created on this node.")

	// The same publications on both, and n2's subscription narrowed: only the subscriptions differ.
	n2.Exec(t, `CREATE PUBLICATION pub_more FOR TABLE public.t1, public.t3`)
	n2.Exec(t, fmt.Sprintf(`ALTER SUBSCRIPTION sub_n2_from_n1_%s SET PUBLICATION pub_main, pub_more WITH (refresh = false)`, e.DB))
	d12 = run(t, e).Diffs["n1/n2"]
	require.Empty(t, d12.Details.ReplicationSets.TablePlacementDiffs)
	require.Len(t, d12.Details.Subscriptions.Different, 1)
	require.Equal(t, []string{"pub_main", "pub_more"}, d12.Details.Subscriptions.Different[0].Node2.ReplicationSets)
}

// TestPglogicalCatalogPreferredOverNative: a node with pglogical's catalog relations is read
// as pglogical, though it has no pg_extension row (none is made here), and Spock's wins when a
// node has both.
func TestDetectByRelations(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	n1 := e.Node("n1")
	p, err := spockdiff.Detect(context.Background(), n1.Pool)
	require.NoError(t, err)
	require.Equal(t, spockdiff.ProviderNative, p)
	n1.Exec(t, `CREATE SCHEMA spock; CREATE TABLE spock.node (node_id oid)`)
	p, err = spockdiff.Detect(context.Background(), n1.Pool)
	require.NoError(t, err)
	require.Equal(t, spockdiff.ProviderNative, p, "an incomplete catalog is not Spock's")
	n1.Exec(t, `DROP SCHEMA spock CASCADE`)
	n1.Exec(t, spockCatalog(t))
	p, err = spockdiff.Detect(context.Background(), n1.Pool)
	require.NoError(t, err)
	require.Equal(t, spockdiff.ProviderSpock, p)
	var ext int
	require.NoError(t, n1.Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_extension WHERE extname = 'spock'`).Scan(&ext))
	require.Zero(t, ext)
}

// TestCatalogReadAsTheSessionUser: a role that may not read Spock's catalog gets a permission
// error that says what to grant, not an empty configuration.
func TestCatalogReadAsTheSessionUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := testcluster.New(t)
	n1 := e.Node("n1")
	n1.Exec(t, spockCatalog(t))
	role := e.DB + "_reader"
	n1.Exec(t, fmt.Sprintf(`CREATE ROLE %s NOLOGIN`, role))
	t.Cleanup(func() { _, _ = n1.Pool.Exec(ctx, fmt.Sprintf(`DROP ROLE %s`, role)) })
	node, err := engine.OpenNode(ctx, engine.NodeOptions{Name: "n1", ConnInfo: n1.DSN, Role: role, MaxConns: 1})
	require.NoError(t, err)
	defer node.Close()
	p, err := spockdiff.Detect(ctx, node.Pool)
	require.NoError(t, err)
	require.Equal(t, spockdiff.ProviderSpock, p, "found without the right to use schema spock")
	_, err = spockdiff.Collect(ctx, node)
	require.ErrorContains(t, err, "permission denied")
	require.ErrorContains(t, err, "GRANT USAGE ON SCHEMA spock and SELECT on its tables to your role on n1")
}
