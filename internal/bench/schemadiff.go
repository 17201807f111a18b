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
	Tables         int       `json:"tables"`
	TotalRows      int       `json:"total_rows"`
	OnePassSeconds []float64 `json:"one_pass_seconds"`
	DataSeconds    []float64 `json:"data_seconds"`
	DataRatio      float64   `json:"data_ratio"`
	// AceSeconds is ACE's own schema-diff of the same tables (ACE_BIN); 0 when it was skipped.
	AceSeconds       float64 `json:"ace_seconds,omitempty"`
	AceRatio         float64 `json:"ace_ratio,omitempty"`
	StructureTables  int     `json:"structure_tables"`
	StructureSeconds float64 `json:"structure_seconds"`
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
		if err := childBreakdown(ctx, conns[0]); err != nil {
			return err
		}
		s.DataSeconds = append(s.DataSeconds, d.Seconds())
	}
	s.DataRatio = median(s.DataSeconds) / median(s.OnePassSeconds)
	ace, err := aceSchemaDiff(ctx, c, schemaBenchDB, "sd")
	if err != nil {
		return err
	}
	s.AceSeconds = ace.Seconds()
	s.AceRatio = s.AceSeconds / median(s.OnePassSeconds)
	if o.structureTables == 0 {
		return nil
	}
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

// childBreakdown prints where the latest schema-diff's child table-diffs spent their time: in the
// queue, running, and between the last child's end and the parent's.
func childBreakdown(ctx context.Context, conn *pgx.Conn) error {
	var queued, running, tail, span float64
	var children int
	err := conn.QueryRow(ctx, `
		WITH parent AS (SELECT task_id, submitted_at, finished_at FROM ace.tasks WHERE task_type = 'schema-diff'
		                ORDER BY submitted_at DESC LIMIT 1),
		     child AS (SELECT c.* FROM ace.tasks c, parent p WHERE c.args->>'parent_task' = p.task_id::text)
		SELECT count(*),
		       coalesce(avg(extract(epoch FROM started_at - submitted_at)) * 1000, 0),
		       coalesce(avg(extract(epoch FROM finished_at - started_at)) * 1000, 0),
		       coalesce(extract(epoch FROM (SELECT finished_at FROM parent) - max(finished_at)) * 1000, 0),
		       coalesce(extract(epoch FROM max(finished_at) - (SELECT submitted_at FROM parent)), 0)
		FROM child`).Scan(&children, &queued, &running, &tail, &span)
	if err != nil {
		return fmt.Errorf("read the children's times: %w", err)
	}
	step("  %d children: %.1f ms queued, %.1f ms running on average; the parent ended %.1f ms after the last child, %.3fs after its submission",
		children, queued, running, tail, span)
	return nil
}
