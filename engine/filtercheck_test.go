package engine_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine/diff"
	"github.com/ace-agent/ace-agent/internal/testcluster"
)

// filterEnv has a table f that mallory (not a superuser) may read, a table victim she may not,
// and code of hers that escapes to the session's login when it runs: a function, and a domain
// whose CHECK calls it. marker is the file that code creates when it reaches a superuser. The
// cluster authenticates by certificate only: mallory's sessions log in as her with the agent's
// certificate, or as the superuser (its own certificate) with SET ROLE.
func filterEnv(t *testing.T) (e *testcluster.Env, mallory, marker string) {
	e = testcluster.NewSecure(t)
	mallory = e.AddSubmitter("mallory", true)
	marker = markerFile(t, "escaped")
	control := markerFile(t, "control")
	e.ExecAll(`CREATE TABLE f (id int PRIMARY KEY, amount numeric, status text, email text, created_at timestamptz, v text);
		INSERT INTO f SELECT g, g * 10, CASE WHEN g % 2 = 0 THEN 'paid' ELSE 'open' END, 'u' || g || '@x', now() - g * interval '1 hour', 'v'
		FROM generate_series(1, 50) g;
		CREATE TABLE victim (s text); INSERT INTO victim VALUES ('superuser eyes only');
		GRANT SELECT ON f TO ` + mallory + `; GRANT CREATE ON SCHEMA public TO ` + mallory + `;
		SET ROLE ` + mallory + `;
		CREATE FUNCTION public.mark() RETURNS boolean LANGUAGE plpgsql AS $$` + escapeBody(marker) + `$$;
		CREATE FUNCTION public.control() RETURNS boolean LANGUAGE plpgsql AS $$` + escapeBody(control) + `$$;
		CREATE FUNCTION public.md_ok(text) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$` + escapeBody(marker) + `$$;
		CREATE DOMAIN public.md AS text CHECK (public.md_ok(VALUE));
		RESET ROLE`)
	// The control: run in a session that SET ROLE to mallory, her code does reach the login.
	e.Node("n1").Exec(t, `DO $$ BEGIN SET LOCAL ROLE `+mallory+`; PERFORM public.control(); END $$`)
	requireFile(t, control)
	return e, mallory, marker
}

func TestFilterInjectionIsRefusedAndNothingCommits(t *testing.T) {
	t.Parallel()
	e, mallory, _ := filterEnv(t)
	// Attack 1: sent as simple-protocol text, this ran four statements and committed the GRANT as
	// the agent's login.
	for _, filter := range []string{
		`true); RESET ROLE; COMMIT; GRANT SELECT ON public.victim TO ` + mallory + `; SELECT (1`,
		`true) IS NOT FALSE; RESET ROLE; GRANT SELECT ON public.victim TO ` + mallory + `; --`,
		`id > 0) IS NOT FALSE UNION ALL SELECT 1 FROM public.victim WHERE (true`,
		`id > 0) IS NOT FALSE UNION ALL SELECT 1 WHERE (true`,
		`id > 0) IS NOT FALSE GROUP BY id HAVING (true`,
		`id > 0) IS NOT FALSE ORDER BY (true`,
		`id > 0) OR (true`,
		`true) LIMIT (1`,
		`id IN (SELECT 1)`,
	} {
		for _, mode := range sessionModes {
			t.Run(mode+"/"+filter, func(t *testing.T) {
				_, err := diff.TableDiff(context.Background(), nodesAs(t, e, mallory, mode),
					diff.TableDiffOptions{Table: "public.f", TableFilter: filter, SetRoleSessions: mode == setRoleMode}, &testcluster.DiffSink{}, nil)
				require.ErrorContains(t, err, "table_filter")
				require.ErrorContains(t, err, "refused on node n1")
				t.Log(err)
			})
		}
	}
	for _, n := range e.Nodes {
		var granted bool
		require.NoError(t, n.Pool.QueryRow(context.Background(), `SELECT has_table_privilege($1, 'public.victim', 'SELECT')`, mallory).Scan(&granted))
		require.False(t, granted, "the GRANT committed on %s", n.Name)
	}
}

func TestFilterAllowListRefusesCodeThatCouldEscape(t *testing.T) {
	t.Parallel()
	e, mallory, marker := filterEnv(t)
	refused := map[string]string{
		// Attack 2: built-ins that run SQL text, with the SQL inside a string literal.
		`ts_rewrite('a'::tsquery, 'SELECT CASE WHEN public.mark() THEN ''a''::tsquery END, ''b''::tsquery') IS NOT NULL`: "ts_rewrite()",
		`ts_rewrite('a'::tsquery, 'SELECT set_config(''role'', ''none'', false)::tsquery, ''b''::tsquery') IS NOT NULL`:  "ts_rewrite()",
		`query_to_xml('SELECT public.mark()', true, true, '') IS NOT NULL`:                                               "query_to_xml()",
		`table_to_xml('public.victim', true, true, '') IS NOT NULL`:                                                      "table_to_xml()",
		`schema_to_xml('public', true, true, '') IS NOT NULL`:                                                            "schema_to_xml()",
		`database_to_xml(true, true, '') IS NOT NULL`:                                                                    "database_to_xml()",
		`pg_get_viewdef('pg_roles'::regclass) <> ''`:                                                                     "pg_get_viewdef()",
		`set_config('role', 'none', false) IS NOT NULL`:                                                                  "set_config()",
		`pg_read_file('/etc/hostname') <> ''`:                                                                            "pg_read_file()",
		`pg_sleep(0) IS NOT NULL`:                                                                                        "pg_sleep()",
		`txid_current() > 0`:                                                                                             "txid_current()",
		`random() < 2`:                                                                                                   "volatile",
		`public.mark()`:                                                                                                  "public.mark(), which is not built in",
		// Attack 3: a cast to a domain she owns runs its CHECK, which calls her function.
		`v::public.md IS NOT NULL`:                    "domain",
		`'x'::public.md IS NOT NULL`:                  "domain",
		`coalesce(v::public.md, 'y') IS NOT NULL`:     "domain",
		`id IN (SELECT length(s) FROM public.victim)`: "reads public.victim",
	}
	for filter, why := range refused {
		for _, mode := range sessionModes {
			t.Run(mode+"/"+filter, func(t *testing.T) {
				_, err := diff.TableDiff(context.Background(), nodesAs(t, e, mallory, mode),
					diff.TableDiffOptions{Table: "public.f", TableFilter: filter, SetRoleSessions: mode == setRoleMode}, &testcluster.DiffSink{}, nil)
				require.ErrorContains(t, err, "refused on node n1")
				require.ErrorContains(t, err, why)
			})
		}
	}
	requireNoFile(t, marker)
}

func TestLegitimateFiltersPass(t *testing.T) {
	t.Parallel()
	e, mallory, marker := filterEnv(t)
	matching := map[string]int64{
		`amount > 100 AND status = 'paid' AND created_at >= now() - interval '1 day'`: 6,
		`lower(email) LIKE '%0@x'`: 5,
		`coalesce(status, '') <> '' AND amount::int > 0 AND id::text <> '' AND email::varchar(20) <> ''`: 50,
		`id > 40 -- a trailing comment`: 10,
		`status IN ('paid', 'open') AND id = ANY(ARRAY[1, 2, 3]) AND CASE WHEN amount > 0 THEN true END`: 3,
		`email COLLATE "C" > 'u4' AND (id, amount) > (0, 0) AND greatest(id, 1) > 0 AND v IS NOT NULL`:   17,
		`v::text = 'v' AND nullif(id, 0) IS DISTINCT FROM 1 AND to_char(created_at, 'YYYY') <> ''`:       49,
	}
	for filter, rows := range matching {
		for _, mode := range sessionModes {
			t.Run(mode+"/"+filter, func(t *testing.T) {
				s, err := diff.TableDiff(context.Background(), nodesAs(t, e, mallory, mode),
					diff.TableDiffOptions{Table: "public.f", TableFilter: filter, SetRoleSessions: mode == setRoleMode}, &testcluster.DiffSink{}, nil)
				require.NoError(t, err)
				require.Equal(t, rows, s.TotalRowsChecked)
			})
		}
	}
	requireNoFile(t, marker)
}
