package schemadiff

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func catalogWith(tables map[string]Table) Catalog {
	c := Catalog{Objects: map[string][]string{"tables": {}}, Tables: tables}
	for name := range tables {
		c.Objects["tables"] = append(c.Objects["tables"], name)
	}
	return c
}

func intTable(typ string) Table {
	return Table{Columns: map[string]Column{"id": {Type: "integer", NotNull: true}, "v": {Type: typ}}, Key: []string{"id"}}
}

// Any number of nodes is compared at once: five nodes, one of them different, give one finding
// that names every node's definition.
func TestStructureComparesAnyNumberOfNodes(t *testing.T) {
	nodes := []string{"n1", "n2", "n3", "n4", "n5"}
	catalogs := map[string]Catalog{}
	for _, n := range nodes {
		catalogs[n] = catalogWith(map[string]Table{"t": intTable("integer")})
	}
	catalogs["n5"] = catalogWith(map[string]Table{"t": intTable("bigint")})
	findings := Structure("public", nodes, catalogs, Options{})
	require.Len(t, findings, 1)
	require.Equal(t, "public.t.v", findings[0].ObjectName)
	require.Equal(t, Different, findings[0].Kind)
	require.Len(t, findings[0].Definitions, 5)
	require.Equal(t, "bigint", *findings[0].Definitions["n5"])
	require.Equal(t, "integer", *findings[0].Definitions["n4"])
	require.Equal(t, findings, DataBlockers(findings), "a column type blocks a data comparison")

	pairs, _ := Objects("public", nodes, catalogs)
	require.Len(t, pairs, 10, "every pair of five nodes")
}

// With ignore_names, indexes and constraints are matched by definition.
func TestIgnoreNamesMatchesByDefinition(t *testing.T) {
	named := func(index, constraint string) Table {
		t := intTable("integer")
		t.Indexes = map[string]Index{index: {Def: "CREATE INDEX " + index + " ON public.t USING btree (v)", Unnamed: "CREATE INDEX ON public.t USING btree (v)"}}
		t.Constraints = map[string]string{constraint: "CHECK (v > 0)"}
		return t
	}
	nodes := []string{"a", "b"}
	catalogs := map[string]Catalog{"a": catalogWith(map[string]Table{"t": named("i1", "c1")}), "b": catalogWith(map[string]Table{"t": named("i2", "c2")})}
	require.Len(t, Structure("s", nodes, catalogs, Options{}), 4)
	require.Empty(t, Structure("s", nodes, catalogs, Options{IgnoreNames: true}))
}
