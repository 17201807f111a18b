package sqlapi_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// The task types the installed SQL knows are those of the Go registry, and the registry's SQL
// functions exist: a type added on one side only fails here.
func TestRegistryMatchesTheSQLTaskTypes(t *testing.T) {
	t.Parallel()
	e := testcluster.New(t)
	conn := e.Node("n1").Pool
	var registry, diffs []string
	for _, spec := range sqlapi.TaskSpecs {
		registry = append(registry, string(spec.Type))
		if spec.Result == sqlapi.ResultDiff {
			diffs = append(diffs, string(spec.Type))
		}
	}
	t.Run("validators", func(t *testing.T) {
		// The insert trigger knows a task type by its validator, ace.validate_<type>(jsonb).
		rows, err := conn.Query(t.Context(), `SELECT replace(substr(proname, 10), '_', '-') FROM pg_proc
			WHERE pronamespace = 'ace'::regnamespace AND proname LIKE 'validate\_%'
			  AND proargtypes = '3802'::oidvector AND prorettype = 'jsonb'::regtype`)
		require.NoError(t, err)
		sqlTypes, err := pgx.CollectRows(rows, pgx.RowTo[string])
		require.NoError(t, err)
		require.ElementsMatch(t, registry, sqlTypes, "task types with an ace.validate_<type> function vs. sqlapi.TaskSpecs")
		for _, spec := range sqlapi.TaskSpecs {
			require.Contains(t, sqlTypes, strings.ReplaceAll(strings.TrimPrefix(spec.Validator(), "validate_"), "_", "-"))
		}
	})
	t.Run("task types inserted by SQL functions", func(t *testing.T) {
		inserted := regexp.MustCompile(`(?s)INSERT INTO ace\.tasks\s*\(task_type[^)]*\)\s*VALUES\s*\('([^']+)'`)
		for name, src := range functionSources(t, conn) {
			for _, m := range inserted.FindAllStringSubmatch(src, -1) {
				require.Contains(t, registry, m[1], "ace.%s inserts %s tasks, which sqlapi.TaskSpecs does not list", name, m[1])
			}
		}
	})
	t.Run("diff task types", func(t *testing.T) {
		// ace.completed_diff decides which tasks a repair or rerun may act on.
		src := functionSources(t, conn)["completed_diff"]
		m := regexp.MustCompile(`task_type NOT IN \(([^)]*)\)`).FindStringSubmatch(src)
		require.NotNil(t, m, "ace.completed_diff lists the diff task types: %s", src)
		var sqlDiffs []string
		for _, s := range strings.Split(m[1], ",") {
			sqlDiffs = append(sqlDiffs, strings.Trim(strings.TrimSpace(s), "'"))
		}
		require.ElementsMatch(t, diffs, sqlDiffs, "ace.completed_diff's diff types vs. TaskSpecs with Result: ResultDiff")
	})
	t.Run("submit and result functions", func(t *testing.T) {
		sources := functionSources(t, conn)
		for _, spec := range sqlapi.TaskSpecs {
			for _, name := range slices.Concat(spec.Submit, spec.Results) {
				require.Contains(t, sources, name, "%s names ace.%s, which is not installed", spec.Type, name)
			}
			// The first submits the task; a CALL form calls it.
			require.Contains(t, sources[spec.Submit[0]], "'"+string(spec.Type)+"'", "ace.%s submits %s tasks", spec.Submit[0], spec.Type)
		}
	})
}

// functionSources maps each function and procedure of the ace schema to its source (the sources
// of overloads concatenated).
func functionSources(t *testing.T, pool *pgxpool.Pool) map[string]string {
	t.Helper()
	rows, err := pool.Query(t.Context(), `SELECT proname, string_agg(prosrc, E'\n') FROM pg_proc
		WHERE pronamespace = 'ace'::regnamespace GROUP BY proname`)
	require.NoError(t, err)
	sources := map[string]string{}
	var name, src string
	_, err = pgx.ForEachRow(rows, []any{&name, &src}, func() error {
		sources[name] = src
		return nil
	})
	require.NoError(t, err)
	return sources
}
