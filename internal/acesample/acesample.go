// Package acesample loads testdata/ace-diff-sample.json, a diff file written by pgEdge ACE 2.1.1
// for a 3-node, 10,000-row table, and builds that table on test nodes so that each node holds
// exactly the versions of the rows the file shows for it, and identical filler rows elsewhere.
package acesample

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Table is the sampled table's name.
const Table = "public.customers_sample"

// DDL creates the table with the shape the file's rows have.
const DDL = `CREATE TABLE public.customers_sample (
    id bigint PRIMARY KEY, first_name text, last_name varchar(64), email text, balance numeric(12,2),
    created_at timestamptz, is_active boolean, attrs jsonb, loyalty_points int, birth_date date)`

// Path is the fixture's path.
func Path() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "ace-diff-sample.json")
}

// Read returns the fixture's bytes.
func Read() ([]byte, error) { return os.ReadFile(Path()) }

// NodeRows returns, for every node, its rows of the keys the file lists (id -> row as ACE wrote
// it, without metadata). A node holds a key when any of its lists has it.
func NodeRows(file []byte) (map[string]map[string]json.RawMessage, error) {
	var f struct {
		Diffs map[string]struct {
			Rows map[string][]map[string]json.RawMessage `json:"rows"`
		} `json:"diffs"`
	}
	if err := json.Unmarshal(file, &f); err != nil {
		return nil, fmt.Errorf("read the sample: %w", err)
	}
	out := map[string]map[string]json.RawMessage{}
	for _, pair := range f.Diffs {
		for node, rows := range pair.Rows {
			if out[node] == nil {
				out[node] = map[string]json.RawMessage{}
			}
			for _, row := range rows {
				delete(row, "_spock_metadata_")
				raw, err := json.Marshal(row)
				if err != nil {
					return nil, err
				}
				out[node][string(row["id"])] = raw
			}
		}
	}
	return out, nil
}

// Load creates the table on every node (name -> pool) and fills it: ids 10, 20, … 100000 with
// identical generated rows, then each node's own versions of the file's keys (keys a node lacks
// are deleted there).
func Load(ctx context.Context, nodes map[string]*pgxpool.Pool) error {
	file, err := Read()
	if err != nil {
		return err
	}
	perNode, err := NodeRows(file)
	if err != nil {
		return err
	}
	all := map[string]bool{}
	for _, rows := range perNode {
		for id := range rows {
			all[id] = true
		}
	}
	var ids []string
	for id := range all {
		ids = append(ids, id)
	}
	for name, pool := range nodes {
		if err := loadNode(ctx, pool, ids, perNode[name]); err != nil {
			return fmt.Errorf("load the sample on %s: %w", name, err)
		}
	}
	return nil
}

func loadNode(ctx context.Context, pool *pgxpool.Pool, ids []string, rows map[string]json.RawMessage) error {
	if _, err := pool.Exec(ctx, DDL); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `INSERT INTO customers_sample SELECT g * 10, 'Name' || g, 'L' || g, g || '@mail.test',
		g * 1.25, '2019-01-01 00:00:00+00'::timestamptz + g * interval '1 second', g % 2 = 0, jsonb_build_object('g', g), g, date '1950-01-01' + g
		FROM generate_series(1, 10000) g`); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, `DELETE FROM customers_sample WHERE id = ANY($1::text[]::bigint[])`, ids); err != nil {
		return err
	}
	var list []json.RawMessage
	for _, r := range rows {
		list = append(list, r)
	}
	raw, err := json.Marshal(list)
	if err != nil {
		return err
	}
	_, err = pool.Exec(ctx, `INSERT INTO customers_sample
		SELECT (r->>'id')::bigint, r->>'first_name', r->>'last_name', r->>'email', (r->>'balance')::numeric(12,2),
		       (r->>'created_at')::timestamptz, (r->>'is_active')::boolean, (r->>'attrs')::jsonb,
		       (r->>'loyalty_points')::int, (r->>'birth_date')::date
		FROM jsonb_array_elements($1::jsonb) r`, string(raw))
	return err
}
