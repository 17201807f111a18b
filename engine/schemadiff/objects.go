package schemadiff

import (
	"maps"
	"slices"
	"strings"
)

// Pair is ACE's comparison of two nodes' objects (its ddl-only output): per node, the objects
// the other node has and it lacks (missing_objects), and those only it has (extra_objects).
type Pair struct {
	Status string                 `json:"status"` // IDENTICAL or MISMATCH
	Diffs  map[string]NodeObjects `json:"diffs"`
}

// NodeObjects are one node's missing and extra objects by kind.
type NodeObjects struct {
	Missing map[string][]string `json:"missing_objects"`
	Extra   map[string][]string `json:"extra_objects"`
}

// aceKinds renames the kinds ACE also lists to ACE's keys.
var aceKinds = map[string]string{"indexes": "indices"}

// singular names a kind's objects in a finding.
var singular = map[string]string{"tables": "table", "views": "view", "materialized_views": "materialized view",
	"sequences": "sequence", "indexes": "index", "functions": "function", "types": "type", "triggers": "trigger",
	"policies": "policy"}

// Objects compares the names of the schema's objects: ACE's per-pair result ("n1/n2", for
// every pair of nodes in the order given), and a finding per object missing on some node.
func Objects(schema string, nodes []string, catalogs map[string]Catalog) (map[string]Pair, []Finding) {
	pairs := map[string]Pair{}
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			pairs[a+"/"+b] = comparePair(a, b, catalogs)
		}
	}
	return pairs, objectFindings(schema, nodes, catalogs)
}

func comparePair(a, b string, catalogs map[string]Catalog) Pair {
	p := Pair{Status: "IDENTICAL", Diffs: map[string]NodeObjects{}}
	onlyA, onlyB := map[string][]string{}, map[string][]string{}
	for _, kind := range kinds(catalogs) {
		x, y := catalogs[a].Objects[kind], catalogs[b].Objects[kind]
		key := kind
		if k, ok := aceKinds[kind]; ok {
			key = k
		}
		if d := minus(x, y); len(d) > 0 {
			onlyA[key] = d
		}
		if d := minus(y, x); len(d) > 0 {
			onlyB[key] = d
		}
	}
	if len(onlyA)+len(onlyB) > 0 {
		p.Status = "MISMATCH"
		p.Diffs[a] = NodeObjects{Missing: onlyB, Extra: onlyA}
		p.Diffs[b] = NodeObjects{Missing: onlyA, Extra: onlyB}
	}
	return p
}

func objectFindings(schema string, nodes []string, catalogs map[string]Catalog) []Finding {
	var out []Finding
	for _, kind := range kinds(catalogs) {
		names := map[string]bool{}
		for _, n := range nodes {
			for _, o := range catalogs[n].Objects[kind] {
				names[o] = true
			}
		}
		for _, name := range slices.Sorted(maps.Keys(names)) {
			object := quoteIdent(schema) + "." + name
			out = append(out, compareValues(singular[kind], object, "", nodes, func(n string) (string, bool) {
				return object, slices.Contains(catalogs[n].Objects[kind], name)
			})...)
		}
	}
	return out
}

// kinds lists the object kinds the catalogs name, sorted.
func kinds(catalogs map[string]Catalog) []string {
	set := map[string]bool{}
	for _, c := range catalogs {
		for k := range c.Objects {
			set[k] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// minus lists what x has and y lacks.
func minus(x, y []string) []string {
	var out []string
	for _, v := range x {
		if !slices.Contains(y, v) {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, strings.Compare)
	return out
}
