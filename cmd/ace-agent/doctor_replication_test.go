package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// TestDoctorFindsTheAceSchemaReplicated: doctor names every node whose ace schema is in a
// publication (FOR ALL TABLES, FOR TABLES IN SCHEMA ace, a list naming its tables) or in a
// Spock replication set (Spock's catalog stubbed from its own definitions).
func TestDoctorFindsTheAceSchemaReplicated(t *testing.T) {
	t.Parallel()
	e := testcluster.NewSecure(t)
	e.AddSubmitter("alice", true)
	n1 := e.Node("n1")

	r := ace(t, n1.AgentDSN, "doctor")
	require.NotContains(t, r.stdout, "ace schema's tables", r.String())
	require.Contains(t, r.stdout, "ok       node n2: schema ace is in no publication or replication set")

	e.Node("n1").Exec(t, `CREATE PUBLICATION everything FOR ALL TABLES`)
	e.Node("n2").Exec(t, `CREATE PUBLICATION by_schema FOR TABLES IN SCHEMA ace; CREATE PUBLICATION listed FOR TABLE ace.tasks`)
	catalog, err := os.ReadFile("../../testdata/spock/spock5_catalog.sql")
	require.NoError(t, err)
	n3 := e.Node("n3")
	n3.Exec(t, string(catalog))
	n3.Exec(t, `GRANT USAGE ON SCHEMA spock TO PUBLIC; GRANT SELECT ON ALL TABLES IN SCHEMA spock TO PUBLIC;
		INSERT INTO spock.node (node_id, node_name) VALUES (3, 'n3');
		INSERT INTO spock.replication_set (set_id, set_nodeid, set_name) VALUES (1, 3, 'default');
		INSERT INTO spock.replication_set_table (set_id, set_reloid) VALUES (1, 'ace.tasks'), (1, 'ace.nodes')`)

	r = ace(t, n1.AgentDSN, "doctor")
	require.Equal(t, exitDiffers, r.code, r.String())
	require.Contains(t, r.stdout, "PROBLEM  node n1: publication everything publishes the ace schema's tables (")
	require.Contains(t, r.stdout, "it is FOR ALL TABLES")
	require.Contains(t, r.stdout, "PROBLEM  node n2: publication by_schema publishes")
	require.Contains(t, r.stdout, "PROBLEM  node n2: publication listed publishes the ace schema's tables (tasks)")
	require.Contains(t, r.stdout, "PROBLEM  node n3: spock replication set \"default\" holds the ace schema's tables (nodes, tasks)")
	// n1 twice: as the local node and as a registered node. Other tests' submitters, members of
	// the cluster-wide ace_submitters, may add problems of their own.
	require.Equal(t, 5, strings.Count(r.stdout, "publishes the ace schema's tables")+strings.Count(r.stdout, "holds the ace schema's tables"), r.String())
}
