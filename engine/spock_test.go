package engine_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// TestNodeSessionsTurnSpockDDLReplicationOff: on a node whose sessions start with Spock's DDL
// replication on (set here for the database, as a Spock node's configuration would), every
// engine session turns it off; on a node without Spock's settings it sets nothing and works.
func TestNodeSessionsTurnSpockDDLReplicationOff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	settings := []string{"spock.enable_ddl_replication", "spock.include_ddl_repset"}
	t.Run("spock", func(t *testing.T) {
		t.Parallel()
		e := testcluster.New(t)
		n1 := e.Node("n1")
		for _, s := range settings {
			n1.Exec(t, fmt.Sprintf(`ALTER DATABASE %s SET %s = on`, e.DB, s))
		}
		node := n1.EngineNode(t, 1, nil)
		for _, s := range settings {
			var v string
			require.NoError(t, node.Pool.QueryRow(ctx, `SELECT current_setting($1)`, s).Scan(&v))
			require.Equal(t, "off", v, s)
		}
	})
	t.Run("no spock", func(t *testing.T) {
		t.Parallel()
		e := testcluster.New(t)
		node, err := engine.OpenNode(ctx, engine.NodeOptions{Name: "n1", ConnInfo: e.Node("n1").DSN, Role: "pg_monitor"})
		require.NoError(t, err)
		defer node.Close()
		for _, s := range settings {
			var v *string
			require.NoError(t, node.Pool.QueryRow(ctx, `SELECT current_setting($1, true)`, s).Scan(&v))
			require.Nil(t, v, "%s is not made up where the server does not know it", s)
		}
	})
}
