package diff

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/engine/acefile"
)

// importedKey gathers one key's versions from every list of the file.
type importedKey struct {
	rows    map[string]json.RawMessage // node -> the row as ACE wrote it, without metadata
	where   map[string]string          // node -> where in the file that row is, for errors
	meta    map[string]engine.RowMeta
	covered map[string]bool // nodes of the pairs that list this key
}

// ImportOptions are the options of ImportACEDiff.
type ImportOptions struct {
	// SetRoleSessions says n's sessions log in as the agent and SET ROLE to the submitter: the
	// import casts the file's values to the column types, which runs the CHECK constraints of
	// domains behind them, so a table whose domains a non-superuser owns is refused.
	SetRoleSessions bool
}

// ImportACEDiff reads an ACE diff file and streams its differing keys into sink as DiffRows,
// with every value re-encoded by node n (where the table must exist) exactly as a table-diff
// stores it, so a repair can compare them with the rows on the nodes. It returns the file's
// summary in the form of a diff's.
//
// The file is checked against the table's current shape before anything is stored: every row
// has exactly the table's columns (no unknown column, none missing, key columns not null), is
// listed under a node of its pair, and every value casts to its column's type. An error names
// the row, its node and pair, and the column.
func ImportACEDiff(ctx context.Context, n *engine.Node, file json.RawMessage, sink engine.Sink, opts ImportOptions) (*engine.DiffSummary, error) {
	f, err := acefile.ReadDiffFile(file)
	if err != nil {
		return nil, err
	}
	t, err := engine.LoadTable(ctx, n, f.Summary.Schema, f.Summary.Table)
	if err != nil {
		return nil, err
	}
	if !slices.Equal(t.PKNames(), f.Summary.PrimaryKey) {
		return nil, fmt.Errorf("the diff file's primary key (%s) is not the primary key of %s (%s)",
			strings.Join(f.Summary.PrimaryKey, ", "), t.Display(), strings.Join(t.PKNames(), ", "))
	}
	if opts.SetRoleSessions {
		if err := engine.CheckTableCode(ctx, n, t, "", engine.CodeUse{Cast: true}); err != nil {
			return nil, fmt.Errorf("import refused: %w", err)
		}
	}
	gathered, order, err := gatherKeys(f, t)
	if err != nil {
		return nil, err
	}
	keys, err := engine.NewKeyOrder([]*engine.Table{t}, []string{n.Name})
	if err != nil {
		return nil, err
	}
	im := &importer{node: n, table: t, keys: keys, hash: engine.NewRowHash(t.Columns, engine.HashBinary), nodes: sortedCopy(f.Summary.Nodes), pairs: map[string]int64{}}
	// Every row is read and checked before the first is stored.
	var batches [][]engine.DiffRow
	for start := 0; start < len(order); start += fetchBatch {
		batch := order[start:min(start+fetchBatch, len(order))]
		rows, err := im.diffRows(ctx, gathered, batch)
		if err != nil {
			return nil, err
		}
		batches = append(batches, rows)
	}
	for _, rows := range batches {
		if err := sink.WriteDiffRows(ctx, rows); err != nil {
			return nil, fmt.Errorf("store imported rows: %w", err)
		}
	}
	return im.summary(f, int64(len(order))), nil
}

func sortedCopy(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	return out
}

// gatherKeys collects every listed row by key (the key columns' JSON as ACE wrote them).
func gatherKeys(f *acefile.DiffFile, t *engine.Table) (map[string]*importedKey, []string, error) {
	keys := map[string]*importedKey{}
	var order []string
	for _, pairName := range f.PairNames() {
		pair, ok := acefile.SplitPair(pairName)
		for _, node := range slices.Sorted(maps.Keys(f.Diffs[pairName].Rows)) {
			if !ok || !slices.Contains(pair, node) || !slices.Contains(f.Summary.Nodes, node) {
				return nil, nil, fmt.Errorf("pair %s lists rows of node %s, which is not one of the pair's nodes or of the file's nodes (%s)",
					pairName, node, strings.Join(f.Summary.Nodes, ", "))
			}
			for i, raw := range f.Diffs[pairName].Rows[node] {
				where := fmt.Sprintf("row %d of node %s in pair %s", i+1, node, pairName)
				fields, meta, err := readRow(raw)
				if err != nil {
					return nil, nil, fmt.Errorf("%s: %w", where, err)
				}
				if err := acefile.CheckRowShape(fields, t.ColumnNames(), t.Display()); err != nil {
					return nil, nil, fmt.Errorf("%s: %w", where, err)
				}
				k, err := acefile.Key(fields, t.PKNames())
				if err != nil {
					return nil, nil, fmt.Errorf("%s: %w", where, err)
				}
				ik := keys[k]
				if ik == nil {
					ik = &importedKey{rows: map[string]json.RawMessage{}, where: map[string]string{}, meta: map[string]engine.RowMeta{}, covered: map[string]bool{}}
					keys[k] = ik
					order = append(order, k)
				}
				ik.where[node] = where
				ik.rows[node], _ = json.Marshal(fields)
				if meta != nil {
					ik.meta[node] = *meta
				}
				for _, p := range pair {
					ik.covered[p] = true
				}
			}
		}
	}
	return keys, order, nil
}

// readRow separates a row's columns from its commit metadata (nil when it has none).
func readRow(raw json.RawMessage) (map[string]json.RawMessage, *engine.RowMeta, error) {
	fields, m, err := acefile.SplitRow(raw)
	if err != nil || m == nil {
		return fields, nil, err
	}
	ts, err := m.CommitTime()
	if err != nil {
		return nil, nil, err
	}
	return fields, &engine.RowMeta{CommitTS: ts, NodeOrigin: m.NodeOrigin}, nil
}

// importer turns gathered keys into DiffRows.
type importer struct {
	node      *engine.Node
	table     *engine.Table
	keys      engine.KeyOrder
	hash      engine.RowHash
	nodes     []string
	pairs     map[string]int64
	ambiguous int64
}

// normalized is one row re-encoded by PostgreSQL, with its digest.
type normalized struct {
	pk, pkSort, row json.RawMessage
	digest          string
}

func (im *importer) diffRows(ctx context.Context, keys map[string]*importedKey, batch []string) ([]engine.DiffRow, error) {
	type ref struct{ key, node string }
	var refs []ref
	var elems []json.RawMessage
	for _, k := range batch {
		for _, n := range slices.Sorted(maps.Keys(keys[k].rows)) {
			refs = append(refs, ref{k, n})
			elems = append(elems, keys[k].rows[n])
		}
	}
	norm, err := im.normalize(ctx, elems)
	if err != nil {
		if bad := im.findBadValue(ctx, elems, func(i int) string { return keys[refs[i].key].where[refs[i].node] }); bad != nil {
			return nil, bad
		}
		return nil, err
	}
	byKey := map[string]map[string]normalized{}
	for i, rf := range refs {
		if byKey[rf.key] == nil {
			byKey[rf.key] = map[string]normalized{}
		}
		byKey[rf.key][rf.node] = norm[i]
	}
	out := make([]engine.DiffRow, 0, len(batch))
	for _, k := range batch {
		out = append(out, im.diffRow(keys[k], byKey[k]))
	}
	return out, nil
}

// normalize casts each element's values to the table's column types on the node and renders
// them as a table-diff does.
func (im *importer) normalize(ctx context.Context, elems []json.RawMessage) ([]normalized, error) {
	arg, err := json.Marshal(elems)
	if err != nil {
		return nil, fmt.Errorf("encode rows: %w", err)
	}
	casts := make([]string, len(im.table.Columns))
	for i, c := range im.table.Columns {
		casts[i] = engine.ElemCast(c) + " AS " + engine.Ident(c.Name)
	}
	values := fmt.Sprintf(`(SELECT "?ace_o?", %s FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS %s(%s, "?ace_o?")) AS "?ace_j?"`,
		strings.Join(casts, ", "), engine.ElemAlias, engine.ElemColumn)
	sql := fmt.Sprintf(`SELECT %s, %s, %s, %s FROM %s ORDER BY "?ace_o?"`, engine.JSONObjectExpr(im.table.PK), im.keys.KeySortJSON(),
		engine.JSONObjectExpr(im.table.Columns), im.hash.Digest, im.hash.Source(values, "true"))
	rows, err := im.node.Pool.Query(ctx, sql, string(arg))
	if err != nil {
		return nil, fmt.Errorf("read the diff file's values as the columns of %s on node %s: %w", im.table.Display(), im.node.Name, err)
	}
	defer rows.Close()
	out := make([]normalized, 0, len(elems))
	for rows.Next() {
		var n normalized
		var pk, pkSort, row, digest []byte
		if err := rows.Scan(&pk, &pkSort, &row, &digest); err != nil {
			return nil, fmt.Errorf("read normalised rows: %w", err)
		}
		n.pk, n.pkSort, n.row, n.digest = pk, pkSort, row, string(digest)
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the diff file's values as the columns of %s on node %s: %w", im.table.Display(), im.node.Name, err)
	}
	return out, nil
}

// findBadValue looks for the value that does not cast to its column's type after a batch
// failed to, and names it; nil when every value casts (the batch failed for another reason).
func (im *importer) findBadValue(ctx context.Context, elems []json.RawMessage, where func(i int) string) error {
	all, err := json.Marshal(elems)
	if err != nil {
		return nil
	}
	for _, c := range im.table.Columns {
		sql := fmt.Sprintf(`SELECT count(%s) FROM jsonb_array_elements($1::jsonb) AS %s(%s)`, engine.ElemCast(c), engine.ElemAlias, engine.ElemColumn)
		if err := im.node.Pool.QueryRow(ctx, sql, string(all)).Scan(new(int64)); err == nil || ctx.Err() != nil {
			continue
		}
		for i, e := range elems {
			one, _ := json.Marshal([]json.RawMessage{e})
			if err := im.node.Pool.QueryRow(ctx, sql, string(one)).Scan(new(int64)); err != nil {
				var fields map[string]json.RawMessage
				_ = json.Unmarshal(e, &fields)
				return fmt.Errorf("%s: column %q: the value %s is not a %s: %w", where(i), c.Name, fields[c.Name], c.Type, err)
			}
		}
	}
	return nil
}

// diffRow builds the stored form of one key: every node's row (null where the file shows the
// node lacks it), versions by identical rows, and the commit metadata.
func (im *importer) diffRow(k *importedKey, rows map[string]normalized) engine.DiffRow {
	d := engine.DiffRow{Kind: engine.KindModified, Rows: map[string]json.RawMessage{}, Versions: map[string]int{}}
	versionOf := map[string]int{}
	for _, n := range im.nodes {
		row, ok := rows[n]
		if !ok {
			d.Kind = engine.KindMissing
			d.Rows[n] = engine.NullRow
			if !k.covered[n] {
				im.ambiguous++
			}
			continue
		}
		d.PK, d.PKSort, d.Rows[n] = row.pk, row.pkSort, row.row
		v, seen := versionOf[row.digest]
		if !seen {
			v = len(versionOf) + 1
			versionOf[row.digest] = v
		}
		d.Versions[n] = v
		if m, ok := k.meta[n]; ok {
			if d.Meta == nil {
				d.Meta = map[string]engine.RowMeta{}
			}
			d.Meta[n] = m
		}
	}
	im.countPairs(d)
	return d
}

func (im *importer) countPairs(d engine.DiffRow) {
	for i, a := range im.nodes {
		for _, b := range im.nodes[i+1:] {
			va, okA := d.Versions[a]
			vb, okB := d.Versions[b]
			if okA != okB || (okA && va != vb) {
				im.pairs[pairKey(a, b)]++
			}
		}
	}
}

func (im *importer) summary(f *acefile.DiffFile, keys int64) *engine.DiffSummary {
	s := f.Summary
	out := &engine.DiffSummary{
		Schema: im.table.Schema, Table: im.table.Name, TableName: im.table.Display(), TableFilter: s.TableFilter,
		Nodes: im.nodes, BlockSize: s.BlockSize, CompareUnitSize: s.CompareUnitSize, ConcurrencyFactor: s.ConcurrencyFactor,
		MaxDiffRows: s.MaxDiffRows, TimeTaken: s.TimeTaken, DiffRowsCount: map[string]int64{},
		DiffRowLimitReached: s.DiffRowLimitReached, TotalRowsChecked: s.TotalRowsChecked,
		InitialRangesCount: s.InitialRangesCount, PrimaryKey: im.table.PKNames(), Columns: im.table.ColumnNames(),
		ColumnTypes: im.table.ColumnTypes(), DifferingKeys: keys, HashVersion: engine.HashVersion,
	}
	out.StartTime, out.EndTime = acefile.ParseTime(s.StartTime), acefile.ParseTime(s.EndTime)
	for i, a := range im.nodes {
		for _, b := range im.nodes[i+1:] {
			out.DiffRowsCount[pairKey(a, b)] = im.pairs[pairKey(a, b)]
		}
	}
	if im.ambiguous > 0 {
		out.Warnings = append(out.Warnings, fmt.Sprintf("for %d key/node combinations the file does not say what the node holds; "+
			"they are taken as absent (a repair checks each row before changing it)", im.ambiguous))
	}
	return out
}

// engine.NullRow is an absent row.
