package sqlapi

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/engine/schemadiff"
)

// SchemaDiffArgs are a schema-diff task's arguments: the schema, what to compare (objects,
// structure or data), and the options of the child table-diffs a data comparison runs.
type SchemaDiffArgs struct {
	SchemaName        string   `json:"schema_name"`
	Nodes             []string `json:"nodes,omitempty"`
	SkipTables        []string `json:"skip_tables,omitempty"` // bare table names, as the validator normalises them
	DDLOnly           bool     `json:"ddl_only"`
	Compare           string   `json:"compare,omitempty"` // objects, structure or data
	ComparePrivileges bool     `json:"compare_privileges"`
	IgnoreNames       bool     `json:"ignore_names"`
	ChildDiffArgs
}

// The compare modes of a schema diff.
const (
	CompareObjects   = "objects"
	CompareStructure = "structure"
	CompareData      = "data"
)

// ChildDiffArgs are the table-diff options a parent task passes on to each child table-diff.
type ChildDiffArgs struct {
	BlockSize         int     `json:"block_size,omitempty"`
	TableFilter       string  `json:"table_filter,omitempty"`
	MaxDiffRows       int64   `json:"max_diff_rows,omitempty"`
	CompareUnitSize   int     `json:"compare_unit_size,omitempty"`
	ConcurrencyFactor float64 `json:"concurrency_factor,omitempty"`
	MaxConnections    int     `json:"max_connections,omitempty"`
	OverrideBlockSize bool    `json:"override_block_size"`
}

// TableDiff is the child table-diff of one table on the given nodes.
func (c ChildDiffArgs) TableDiff(table string, nodes []string) Child {
	args := map[string]any{"table_name": table, "nodes": nodes, "override_block_size": c.OverrideBlockSize}
	set := func(key string, v any, ok bool) {
		if ok {
			args[key] = v
		}
	}
	set("block_size", c.BlockSize, c.BlockSize > 0)
	set("table_filter", c.TableFilter, c.TableFilter != "")
	set("max_diff_rows", c.MaxDiffRows, c.MaxDiffRows > 0)
	set("compare_unit_size", c.CompareUnitSize, c.CompareUnitSize > 0)
	set("concurrency_factor", c.ConcurrencyFactor, c.ConcurrencyFactor > 0)
	set("max_connections", c.MaxConnections, c.MaxConnections > 0)
	return Child{Key: table, Type: TypeTableDiff, Args: args}
}

// WriteSchemaFindings stores a schema diff's findings in ace.schema_findings, numbered in the
// order given, fenced by the claim.
func (r *Run) WriteSchemaFindings(ctx context.Context, findings []schemadiff.Finding) error {
	if len(findings) == 0 {
		return nil
	}
	data := make([][]any, len(findings))
	for i, f := range findings {
		data[i] = []any{r.Task.ID, int64(i + 1), f.ObjectType, f.ObjectName, f.Detail, f.Kind, f.Definitions}
	}
	return r.fenced(ctx, func(tx pgx.Tx) error {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"ace", "schema_findings"},
			[]string{"task_id", "row_no", "object_type", "object_name", "detail", "kind", "definitions"}, pgx.CopyFromRows(data))
		if err != nil {
			return fmt.Errorf("store %d schema findings of task %s: %w", len(findings), r.Task.ID, err)
		}
		return nil
	})
}
