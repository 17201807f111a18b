package agent_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// TestOwnSessionsKeepSpockDDLLocal: on a node whose sessions start with Spock's DDL
// replication on, the install's DDL and the agent's writes to the ace schema run with it off,
// as recorded by an event trigger and a trigger on ace.agents when they fire.
func TestOwnSessionsKeepSpockDDLLocal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := testcluster.New(t)
	n1 := e.Node("n1")
	for _, s := range []string{"spock.enable_ddl_replication", "spock.include_ddl_repset"} {
		n1.Exec(t, fmt.Sprintf(`ALTER DATABASE %s SET %s = on`, e.DB, s))
	}
	n1.Exec(t, `CREATE TABLE public.seen (what text, ddl text, repset text);
		CREATE FUNCTION public.record_settings() RETURNS event_trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.seen VALUES ('install', current_setting('spock.enable_ddl_replication'), current_setting('spock.include_ddl_repset'));
		END $$;
		CREATE FUNCTION public.record_agent() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO public.seen VALUES ('agent', current_setting('spock.enable_ddl_replication'), current_setting('spock.include_ddl_repset'));
			RETURN NEW;
		END $$;
		CREATE TRIGGER record_agent BEFORE INSERT OR UPDATE ON ace.agents FOR EACH ROW EXECUTE FUNCTION public.record_agent()`)
	// Last, so that it records only what the install does.
	n1.Exec(t, `CREATE EVENT TRIGGER record_settings ON ddl_command_end EXECUTE FUNCTION public.record_settings()`)
	t.Cleanup(func() { _, _ = n1.Pool.Exec(ctx, `DROP EVENT TRIGGER IF EXISTS record_settings`) })

	conn, err := n1.Pool.Acquire(ctx)
	require.NoError(t, err)
	_, err = sqlapi.Install(ctx, conn.Conn())
	conn.Release()
	require.NoError(t, err)
	n1.StartAgent(t)
	require.Eventually(t, func() bool {
		var n int
		return n1.Pool.QueryRow(ctx, `SELECT count(*) FROM public.seen WHERE what = 'agent'`).Scan(&n) == nil && n > 0
	}, time.Minute, 50*time.Millisecond, "the agent registers in ace.agents")

	rows, err := n1.Pool.Query(ctx, `SELECT what, count(*) FILTER (WHERE ddl = 'off' AND repset = 'off'), count(*) FROM public.seen GROUP BY what ORDER BY what`)
	require.NoError(t, err)
	defer rows.Close()
	seen := map[string][2]int64{}
	for rows.Next() {
		var what string
		var off, all int64
		require.NoError(t, rows.Scan(&what, &off, &all))
		seen[what] = [2]int64{off, all}
	}
	require.NoError(t, rows.Err())
	for _, what := range []string{"install", "agent"} {
		require.Positive(t, seen[what][1], "%s wrote nothing that was seen", what)
		require.Equal(t, seen[what][1], seen[what][0], "%s: every write with Spock's DDL replication off", what)
	}
}
