// Package schemadiff compares what the nodes of a cluster hold in one schema: the names of its
// objects, and the definition of each table (columns, constraints, indexes, triggers, row
// security and policies, replica identity, partitioning, the enum labels and domain checks of
// the column types, and optionally owner and privileges). Each node describes itself with
// ace.schema_catalog, which renders every definition the same way on every node and never an
// OID; this package reads those descriptions and reports what differs, per node.
package schemadiff
