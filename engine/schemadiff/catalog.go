package schemadiff

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/sourcegraph/conc/pool"

	"github.com/ace-agent/ace-agent/engine"
)

// Catalog is what one node holds in the schema, as ace.schema_catalog describes it.
type Catalog struct {
	// Objects are the names of the schema's objects by kind (tables, views, functions with their
	// identity arguments, indexes, ...), sorted.
	Objects map[string][]string `json:"objects"`
	// Tables are the tables' definitions by name, when they were asked for.
	Tables map[string]Table `json:"tables"`
}

// Table is one table's definition. Every part is text rendered the same way on every node.
type Table struct {
	Columns     map[string]Column `json:"columns"`
	Key         []string          `json:"key"`
	Constraints map[string]string `json:"constraints"`
	Indexes     map[string]Index  `json:"indexes"`
	Triggers    map[string]string `json:"triggers"`
	Policies    map[string]string `json:"policies"`
	// ColumnTypes are the enum and domain types of the columns, by name: labels, checks.
	ColumnTypes     map[string]string `json:"column_types"`
	RowSecurity     *string           `json:"row_security"`
	ReplicaIdentity *string           `json:"replica_identity"`
	PartitionKey    *string           `json:"partition_key"`
	PartitionOf     *string           `json:"partition_of"`
	PartitionBound  *string           `json:"partition_bound"`
	Owner           *string           `json:"owner"`
	ACL             *string           `json:"acl"`
}

// Column is one column's definition.
type Column struct {
	Type      string  `json:"type"`
	NotNull   bool    `json:"not_null"`
	Default   *string `json:"default"`
	Collation *string `json:"collation"`
	Identity  *string `json:"identity"`
	Generated *string `json:"generated"`
}

// Index is an index's definition, and the same without the index's own name.
type Index struct {
	Def     string `json:"def"`
	Unnamed string `json:"unnamed"`
}

// What a catalog read includes beyond the objects' names.
type ReadOptions struct {
	Tables     bool // each table's definition
	Privileges bool // with owner and privileges
}

// ReadCatalogs reads every node's catalog of the schema at once, each in a read-only
// transaction of the node's session (the submitter's).
func ReadCatalogs(ctx context.Context, nodes []*engine.Node, schema string, o ReadOptions) (map[string]Catalog, error) {
	catalogs := make([]Catalog, len(nodes))
	p := pool.New().WithErrors().WithContext(ctx)
	for i, n := range nodes {
		p.Go(func(ctx context.Context) error {
			c, err := readCatalog(ctx, n, schema, o)
			catalogs[i] = c
			return err
		})
	}
	if err := p.Wait(); err != nil {
		return nil, err
	}
	byNode := make(map[string]Catalog, len(nodes))
	for i, n := range nodes {
		byNode[n.Name] = catalogs[i]
	}
	return byNode, nil
}

func readCatalog(ctx context.Context, n *engine.Node, schema string, o ReadOptions) (Catalog, error) {
	var raw []byte
	err := pgx.BeginTxFunc(ctx, n.Pool, pgx.TxOptions{AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT ace.schema_catalog($1, $2, $3)`, schema, o.Tables, o.Privileges).Scan(&raw)
	})
	if err != nil {
		return Catalog{}, fmt.Errorf("node %s: read the catalog of schema %s: %w (is the ace schema of this version installed there? run ace-agent install)", n.Name, schema, err)
	}
	var c Catalog
	if err := json.Unmarshal(raw, &c); err != nil {
		return Catalog{}, fmt.Errorf("node %s: decode the catalog of schema %s: %w", n.Name, schema, err)
	}
	return c, nil
}
