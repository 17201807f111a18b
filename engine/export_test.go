package engine

import (
	"context"
	"fmt"
)

// RowSummaries hashes every row of table on node n as a block of its own, with the SQL a diff
// uses for block summaries, and returns each row's summary (count and both lanes) by its
// canonical key text.
func RowSummaries(ctx context.Context, n *Node, table string) (map[string]string, error) {
	schema, name, err := SplitTableName(table)
	if err != nil {
		return nil, err
	}
	t, err := LoadTable(ctx, n, schema, name)
	if err != nil {
		return nil, err
	}
	keys, err := NewKeyOrder([]*Table{t}, []string{n.Name})
	if err != nil {
		return nil, err
	}
	h := NewRowHash(t.Columns, HashBinary)
	sql := SummarySQL(keys.KeyText(), h, h.Source(t.Qualified(), "true"))
	rows, err := n.Pool.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, lane1, lane2 string
		var count int64
		if err := rows.Scan(&k, &count, &lane1, &lane2); err != nil {
			return nil, err
		}
		out[k] = fmt.Sprintf("%d/%s/%s", count, lane1, lane2)
	}
	return out, rows.Err()
}
