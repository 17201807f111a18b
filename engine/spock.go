package engine

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// keepLocalSQL turns Spock's DDL replication off, for the session or (local) the transaction,
// as ACE does for its own connections: on a Spock node, the agent's DDL and its writes to the
// ace schema must not replicate to the other nodes, each of which has its own ace schema. It
// sets only the settings the server knows (Spock defines them when it is loaded; a placeholder
// from the configuration counts too, and setting it is harmless), and only where the session's
// role may, so it cannot fail on a server without Spock.
func keepLocalSQL(local bool) string {
	return fmt.Sprintf(`SELECT pg_catalog.set_config(s.name, 'off', %t)
	FROM (VALUES ('spock.enable_ddl_replication'), ('spock.include_ddl_repset')) AS s(name)
	WHERE pg_catalog.current_setting(s.name, true) IS NOT NULL
	  AND coalesce((SELECT p.context = 'user' OR (p.context = 'superuser' AND r.rolsuper)
	                FROM pg_catalog.pg_settings p, pg_catalog.pg_roles r
	                WHERE p.name = s.name AND r.rolname = current_user), true)`, local)
}

// KeepLocalInTransaction is keepLocalSQL for the transaction it runs in (a statement of its
// own, ending without a semicolon): for SQL run after something that resets the session's
// settings, such as tern's RESET ALL between migrations.
var KeepLocalInTransaction = keepLocalSQL(true)

// KeepLocal turns Spock's DDL replication off for the session of c; see keepLocalSQL.
func KeepLocal(ctx context.Context, c *pgx.Conn) error {
	if _, err := c.Exec(ctx, keepLocalSQL(false)); err != nil {
		return fmt.Errorf("turn Spock's DDL replication off for this session: %w", err)
	}
	return nil
}
