// Package spockdiff compares the replication configuration of a cluster's nodes, as ACE's
// spock-diff does: each node's subscriptions and the replication sets (or publications) each
// table belongs to, then, for every pair of nodes, the reciprocal subscriptions and the tables
// placed differently. It reads Spock's catalog, pglogical's (whose shape Spock inherited) or
// PostgreSQL's own publications and subscriptions, whichever each node has.
package spockdiff

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ace-agent/ace-agent/engine"
)

// The replication providers a node can have.
const (
	ProviderSpock     = "spock"
	ProviderPglogical = "pglogical"
	ProviderNative    = "native"
)

// catalogRelations are the relations of Spock's and pglogical's catalog this package reads; a
// schema that has them all is taken to be that provider's. Neither is detected by pg_extension:
// what matters is the catalog that the node replicates by, and the reader may see it only there.
var catalogRelations = []string{"node", "local_node", "subscription", "replication_set", "replication_set_table"}

// Subscription is one subscription of a node, in ACE's keys plus the forward origins and slot.
type Subscription struct {
	SubName string `json:"sub_name"`
	// ProviderNode is the node it replicates from: the provider's node name in Spock's or
	// pglogical's catalog; for native replication, the name of the compared node whose slot it
	// streams from, empty when none of them has the slot.
	ProviderNode    string   `json:"provider_node"`
	SubEnabled      bool     `json:"sub_enabled"`
	ReplicationSets []string `json:"replication_sets"`
	ForwardOrigins  []string `json:"forward_origins"`
	SlotName        string   `json:"slot_name"`
}

// RepSet is a replication set (a publication, natively) and its tables, in ACE's keys.
type RepSet struct {
	SetName string   `json:"SetName"`
	RelName []string `json:"RelName"`
}

// NodeConfig is what one node's catalog says; its JSON is ACE's spock_config entry plus the
// provider and, per table, every set it belongs to.
type NodeConfig struct {
	// NodeName is the node's own name in the provider's catalog (the ace node's name natively).
	NodeName      string              `json:"node_name"`
	Provider      string              `json:"provider"`
	Subscriptions []Subscription      `json:"subscriptions"`
	RepSetInfo    []RepSet            `json:"rep_set_info"`
	TableSets     map[string][]string `json:"table_sets"`
	Hints         []string            `json:"hints"`
	// slots are the node's logical slots in this database: natively, a subscription's provider
	// is the node that holds its slot.
	slots []string
}

// Detect returns the provider node replicates by: Spock or pglogical when its schema has every
// catalog relation this package reads, else native logical replication.
func Detect(ctx context.Context, q engine.Querier) (string, error) {
	for _, schema := range []string{ProviderSpock, ProviderPglogical} {
		var complete bool
		// pg_class, not to_regclass: the catalog is found whether or not the reader may use
		// the schema, so a reader without the rights gets a permission error, not "native".
		err := q.QueryRow(ctx, `SELECT count(DISTINCT c.relname) = cardinality($2::text[])
			FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = ANY ($2::text[]) AND c.relkind IN ('r', 'p', 'v')`,
			schema, catalogRelations).Scan(&complete)
		if err != nil {
			return "", fmt.Errorf("look for %s's catalog: %w", schema, err)
		}
		if complete {
			return schema, nil
		}
	}
	return ProviderNative, nil
}

// Collect reads one node's replication configuration as the session's user, who needs to be
// able to read the provider's catalog.
func Collect(ctx context.Context, node *engine.Node) (NodeConfig, error) {
	provider, err := Detect(ctx, node.Pool)
	if err != nil {
		return NodeConfig{}, fmt.Errorf("node %s: %w", node.Name, err)
	}
	cfg := NodeConfig{NodeName: node.Name, Provider: provider, TableSets: map[string][]string{}, Hints: []string{}}
	if provider == ProviderNative {
		err = cfg.readNative(ctx, node.Pool)
	} else {
		err = cfg.readCatalog(ctx, node.Pool, provider)
	}
	if err != nil {
		err = fmt.Errorf("node %s: read the %s replication configuration: %w", node.Name, provider, err)
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == pgerrcode.InsufficientPrivilege && provider != ProviderNative {
			err = fmt.Errorf("%w (spock-diff reads the catalog as you: GRANT USAGE ON SCHEMA %s and SELECT on its tables to your role on %s, or run it as a role that may read them)",
				err, provider, node.Name)
		}
		return NodeConfig{}, err
	}
	cfg.addHints()
	return cfg, nil
}

// readCatalog reads Spock's or pglogical's catalog, whose tables have the same shape.
func (c *NodeConfig) readCatalog(ctx context.Context, q engine.Querier, schema string) error {
	s := pgx.Identifier{schema}.Sanitize()
	err := q.QueryRow(ctx, `SELECT n.node_name::text FROM `+s+`.local_node l JOIN `+s+`.node n ON n.node_id = l.node_id`).Scan(&c.NodeName)
	if err != nil && err != pgx.ErrNoRows {
		return fmt.Errorf("read the local node: %w", err)
	}
	rows, err := q.Query(ctx, `SELECT s.sub_name::text, coalesce(o.node_name::text, ''), s.sub_enabled,
			coalesce(s.sub_replication_sets, '{}'), coalesce(s.sub_forward_origins, '{}'), s.sub_slot_name::text
		FROM `+s+`.subscription s LEFT JOIN `+s+`.node o ON o.node_id = s.sub_origin
		ORDER BY s.sub_name`)
	if err != nil {
		return fmt.Errorf("read the subscriptions: %w", err)
	}
	c.Subscriptions, err = pgx.CollectRows(rows, scanSubscription)
	if err != nil {
		return fmt.Errorf("read the subscriptions: %w", err)
	}
	// Only the sets of the local node: the catalog also lists other nodes' sets it learnt of.
	return c.readSets(ctx, q, `SELECT rs.set_name::text, CASE WHEN t.oid IS NOT NULL THEN format('%I.%I', n.nspname, t.relname) END
		FROM `+s+`.replication_set rs
		JOIN `+s+`.local_node l ON l.node_id = rs.set_nodeid
		LEFT JOIN `+s+`.replication_set_table rt ON rt.set_id = rs.set_id
		LEFT JOIN pg_catalog.pg_class t ON t.oid = rt.set_reloid
		LEFT JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
		ORDER BY 1, 2`)
}

// readNative reads PostgreSQL's own subscriptions of this database (every column but the
// connection string, which only superusers may read) and publications.
func (c *NodeConfig) readNative(ctx context.Context, q engine.Querier) error {
	// suborigin is PostgreSQL 16's: before it, a subscription applies changes of every origin.
	origin := `'any'`
	var version int
	if err := q.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		return fmt.Errorf("read the server version: %w", err)
	}
	if version >= 160000 {
		origin = `s.suborigin`
	}
	rows, err := q.Query(ctx, `SELECT s.subname::text, '', s.subenabled, s.subpublications,
			CASE WHEN `+origin+` = 'none' THEN '{}'::text[] ELSE '{all}' END, coalesce(s.subslotname::text, '')
		FROM pg_catalog.pg_subscription s
		WHERE s.subdbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
		ORDER BY s.subname`)
	if err != nil {
		return fmt.Errorf("read the subscriptions: %w", err)
	}
	c.Subscriptions, err = pgx.CollectRows(rows, scanSubscription)
	if err != nil {
		return fmt.Errorf("read the subscriptions: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT slot_name::text FROM pg_catalog.pg_replication_slots
		WHERE database = current_database() ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("read the replication slots: %w", err)
	}
	if c.slots, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return fmt.Errorf("read the replication slots: %w", err)
	}
	// pg_publication_tables expands FOR ALL TABLES and FOR TABLES IN SCHEMA.
	return c.readSets(ctx, q, `SELECT p.pubname::text, CASE WHEN pt.tablename IS NOT NULL THEN format('%I.%I', pt.schemaname, pt.tablename) END
		FROM pg_catalog.pg_publication p
		LEFT JOIN pg_catalog.pg_publication_tables pt ON pt.pubname = p.pubname
		ORDER BY 1, 2`)
}

func scanSubscription(row pgx.CollectableRow) (Subscription, error) {
	var s Subscription
	err := row.Scan(&s.SubName, &s.ProviderNode, &s.SubEnabled, &s.ReplicationSets, &s.ForwardOrigins, &s.SlotName)
	slices.Sort(s.ReplicationSets)
	slices.Sort(s.ForwardOrigins)
	return s, err
}

// readSets reads (set name, table or NULL) rows ordered by set, then table, into the sets and
// every set each table belongs to.
func (c *NodeConfig) readSets(ctx context.Context, q engine.Querier, sql string) error {
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return fmt.Errorf("read the replication sets: %w", err)
	}
	defer rows.Close()
	c.RepSetInfo = []RepSet{}
	for rows.Next() {
		var set string
		var table *string
		if err := rows.Scan(&set, &table); err != nil {
			return fmt.Errorf("read the replication sets: %w", err)
		}
		if n := len(c.RepSetInfo); n == 0 || c.RepSetInfo[n-1].SetName != set {
			c.RepSetInfo = append(c.RepSetInfo, RepSet{SetName: set, RelName: []string{}})
		}
		if table != nil {
			last := &c.RepSetInfo[len(c.RepSetInfo)-1]
			last.RelName = append(last.RelName, *table)
			c.TableSets[*table] = append(c.TableSets[*table], set)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the replication sets: %w", err)
	}
	return nil
}

// addHints says what looks unfinished in the node's configuration.
func (c *NodeConfig) addHints() {
	if len(c.Subscriptions) == 0 {
		c.Hints = append(c.Hints, "No subscriptions have been created on this node.")
	}
	for _, s := range c.Subscriptions {
		if len(s.ReplicationSets) == 0 {
			c.Hints = append(c.Hints, fmt.Sprintf("Subscription %q has no replication sets.", s.SubName))
		}
	}
	if len(c.RepSetInfo) > 0 && len(c.TableSets) == 0 {
		c.Hints = append(c.Hints, "No table is in any replication set: add tables to a set ("+setAdvice(c.Provider)+").")
	}
}

func setAdvice(provider string) string {
	switch provider {
	case ProviderSpock:
		return "spock.repset_add_table"
	case ProviderPglogical:
		return "pglogical.replication_set_add_table"
	}
	return "ALTER PUBLICATION ... ADD TABLE"
}

// joinSets renders the sets a table belongs to, or ACE's words for none.
func joinSets(sets []string) string {
	if len(sets) == 0 {
		return NotInAnySet
	}
	return strings.Join(sets, ", ")
}
