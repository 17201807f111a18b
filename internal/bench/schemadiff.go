package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/internal/localpg"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// SchemaDiffResult measures schema diffs: a data schema-diff of many tables against the one
// pass over the same tables (the per-table overhead of its child table-diffs), and a structure
// comparison of many tables.
type SchemaDiffResult struct {
	Tables           int       `json:"tables"`
	TotalRows        int       `json:"total_rows"`
	OnePassSeconds   []float64 `json:"one_pass_seconds"`
	DataSeconds      []float64 `json:"data_seconds"`
	DataRatio        float64   `json:"data_ratio"`
	StructureTables  int       `json:"structure_tables"`
	StructureSeconds float64   `json:"structure_seconds"`
}

const schemaBenchDB = "schemabench"

// measureSchemaDiff loads o.schemaTables tables holding o.schemaRows rows in all into schema sd
// of a database of its own on every node, and o.structureTables empty tables into schema
// sd_structure, then times the schema diffs with an agent on n1.
func measureSchemaDiff(ctx context.Context, c *localpg.Cluster, o options, r *Result) error {
	conns, err := prepareSchemaBench(ctx, c, o)
	if err != nil {
		return err
	}
	defer func() {
		for _, conn := range conns {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	agent, err := startAgentOn(ctx, o.bin, c.Nodes[0].DSN(schemaBenchDB), "n1")
	if err != nil {
		return err
	}
	defer agent.stop()
	s := &SchemaDiffResult{Tables: o.schemaTables, TotalRows: o.schemaRows, StructureTables: o.structureTables}
	r.SchemaDiff = s
	if _, err := schemaOnePass(ctx, conns, o.schemaTables); err != nil { // warm-up
		return err
	}
	for range o.repeat {
		d, err := schemaOnePass(ctx, conns, o.schemaTables)
		if err != nil {
			return err
		}
		s.OnePassSeconds = append(s.OnePassSeconds, d.Seconds())
		d, detail, err := runTask(ctx, conns[0], sqlapi.TypeSchemaDiff, sqlapi.SchemaDiffArgs{SchemaName: "sd"})
		if err != nil {
			return err
		}
		step("schema-diff (data) of %d tables: %.3fs %s", o.schemaTables, d.Seconds(), detail)
		s.DataSeconds = append(s.DataSeconds, d.Seconds())
	}
	s.DataRatio = median(s.DataSeconds) / median(s.OnePassSeconds)
	d, _, err := runTask(ctx, conns[0], sqlapi.TypeSchemaDiff, sqlapi.SchemaDiffArgs{SchemaName: "sd_structure", Compare: sqlapi.CompareStructure})
	if err != nil {
		return err
	}
	s.StructureSeconds = d.Seconds()
	step("schema-diff (structure) of %d tables: %.3fs", o.structureTables, d.Seconds())
	return nil
}

func prepareSchemaBench(ctx context.Context, c *localpg.Cluster, o options) ([]*pgx.Conn, error) {
	var conns []*pgx.Conn
	rowsPerTable := max(1, o.schemaRows/max(1, o.schemaTables))
	for i, n := range c.Nodes {
		step("loading %d tables of %d rows, and %d empty tables, on %s", o.schemaTables, rowsPerTable, o.structureTables, n.Name)
		conn, err := createBenchDB(ctx, n, schemaBenchDB)
		if err != nil {
			return nil, err
		}
		conns = append(conns, conn)
		if _, err := sqlapi.Install(ctx, conn); err != nil {
			return nil, err
		}
		for _, peer := range c.Nodes {
			if err := sqlapi.AddNode(ctx, conn, sqlapi.RegisteredNode{Name: peer.Name, ConnInfo: peer.DSN(schemaBenchDB)}); err != nil {
				return nil, err
			}
		}
		if _, err := conn.Exec(ctx, `CREATE SCHEMA sd; CREATE SCHEMA sd_structure`); err != nil {
			return nil, err
		}
		for t := range o.schemaTables {
			sql := fmt.Sprintf(`CREATE TABLE sd.t%04d (id bigint PRIMARY KEY, name text, amount numeric, at timestamptz);
				INSERT INTO sd.t%04d SELECT g, 'name ' || g, g * 1.25, '2025-01-01 00:00+00'::timestamptz + g * interval '1 second'
				FROM generate_series(1, %d) g; ANALYZE sd.t%04d`, t, t, rowsPerTable, t)
			if _, err := conn.Exec(ctx, sql); err != nil {
				return nil, fmt.Errorf("load %s: %w", c.Nodes[i].Name, err)
			}
		}
		for t := range o.structureTables {
			sql := fmt.Sprintf(`CREATE TABLE sd_structure.t%04d (id bigint PRIMARY KEY, v text NOT NULL DEFAULT '', n int CHECK (n > 0));
				CREATE INDEX ON sd_structure.t%04d (v)`, t, t)
			if _, err := conn.Exec(ctx, sql); err != nil {
				return nil, fmt.Errorf("create structure tables on %s: %w", c.Nodes[i].Name, err)
			}
		}
	}
	return conns, nil
}

// createBenchDB creates a database on the node and connects to it.
func createBenchDB(ctx context.Context, n *localpg.Instance, db string) (*pgx.Conn, error) {
	admin, err := pgx.Connect(ctx, n.DSN("postgres"))
	if err != nil {
		return nil, err
	}
	_, err = admin.Exec(ctx, "CREATE DATABASE "+db)
	admin.Close(ctx)
	if err != nil {
		return nil, err
	}
	return pgx.Connect(ctx, n.DSN(db))
}

// schemaOnePass is the reference: on each node in turn, one hashing pass over every table.
func schemaOnePass(ctx context.Context, conns []*pgx.Conn, tables int) (time.Duration, error) {
	start := time.Now()
	for _, conn := range conns {
		for t := range tables {
			var n int64
			var sum *string
			q := fmt.Sprintf(`SELECT count(*), sum(hashtextextended(t::text, 0))::text FROM sd.t%04d t`, t)
			if err := conn.QueryRow(ctx, q).Scan(&n, &sum); err != nil {
				return 0, fmt.Errorf("one-pass reference: %w", err)
			}
		}
	}
	d := time.Since(start)
	step("one pass over %d tables on 3 nodes: %.3fs", tables, d.Seconds())
	return d, nil
}
