package engine

import (
	"context"
	"fmt"
)

// RowSummaries hashes every row of table on node n as a block of its own, with the SQL a diff
// uses for block summaries, and returns each row's summary (count and both lanes) by its
// canonical key text.
func RowSummaries(ctx context.Context, n *Node, table string) (map[string]string, error) {
	t, h, keys, err := loadForSummary(ctx, n, table)
	if err != nil {
		return nil, err
	}
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

// LeafDigests summarises every row of table on node n as a leaf of its own, with the SQL a
// diff's ordered summary uses (LeafDigestSQL), and returns each row's count and digest by its
// canonical key text.
func LeafDigests(ctx context.Context, n *Node, table string) (map[string]string, error) {
	t, h, keys, err := loadForSummary(ctx, n, table)
	if err != nil {
		return nil, err
	}
	sql := fmt.Sprintf(`SELECT "?ace_o?".k, x."?ace_c?", encode(x."?ace_d?", 'hex')
		FROM (SELECT %s AS k, ctid AS c FROM %s) "?ace_o?", LATERAL (%s) x`,
		keys.KeyText(), t.Qualified(), LeafDigestSQL(h, t.Qualified(), `ctid = "?ace_o?".c`, keys.OrderBy(), 1))
	rows, err := n.Pool.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var k, digest string
		var count int64
		if err := rows.Scan(&k, &count, &digest); err != nil {
			return nil, err
		}
		out[k] = fmt.Sprintf("%d/%s", count, digest)
	}
	return out, rows.Err()
}

// TableDigest summarises all of table on node n as one leaf (LeafDigestSQL) of at most maxRows
// rows: its row count and ordered digest.
func TableDigest(ctx context.Context, n *Node, table string, maxRows int64) (string, error) {
	t, h, keys, err := loadForSummary(ctx, n, table)
	if err != nil {
		return "", err
	}
	var count int64
	var digest string
	err = n.Pool.QueryRow(ctx, `SELECT "?ace_c?", encode("?ace_d?", 'hex') FROM (`+LeafDigestSQL(h, t.Qualified(), "true", keys.OrderBy(), maxRows)+`) x`).Scan(&count, &digest)
	return fmt.Sprintf("%d/%s", count, digest), err
}

func loadForSummary(ctx context.Context, n *Node, table string) (*Table, RowHash, KeyOrder, error) {
	schema, name, err := SplitTableName(table)
	if err != nil {
		return nil, RowHash{}, KeyOrder{}, err
	}
	t, err := LoadTable(ctx, n, schema, name)
	if err != nil {
		return nil, RowHash{}, KeyOrder{}, err
	}
	keys, err := NewKeyOrder([]*Table{t}, []string{n.Name})
	return t, NewRowHash(t.Columns, HashBinary), keys, err
}
