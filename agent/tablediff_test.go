package agent_test

import (
	"fmt"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

const typesDDL = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE public.t (
    id  bigint PRIMARY KEY,
    t1  text,
    t2  text,
    n   numeric(12,2),
    nf  numeric,
    ts  timestamptz,
    j   jsonb,
    b   bytea,
    u   uuid,
    arr int[],
    tarr text[],
    e   mood
)`

const typesRows = `
INSERT INTO t SELECT g, 'text ' || g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'x' END, g * 1.5, g / 3.0,
       '2024-01-01 00:00:00+00'::timestamptz + g * interval '1 minute',
       jsonb_build_object('k', g, 'list', jsonb_build_array(g, 'a')), decode(md5(g::text), 'hex'),
       md5(g::text)::uuid, ARRAY[g, g + 1], ARRAY['a,b', 'c"d'], (ARRAY['sad','ok','happy']::mood[])[g % 3 + 1]
FROM generate_series(1, 2000) g`

// plantTypeDrift changes one row per trap, on different nodes, and returns the keys that must be
// reported.
func plantTypeDrift(e *diffEnv) []string {
	n1, n2, n3 := e.Node("n1"), e.Node("n2"), e.Node("n3")
	t := e.t
	n2.Exec(t, `UPDATE t SET t1 = 'changed' WHERE id = 10`)
	n3.Exec(t, `DELETE FROM t WHERE id = 20`)
	n1.Exec(t, `INSERT INTO t (id, t1) VALUES (5000, 'above every other node''s range')`)
	n2.Exec(t, `INSERT INTO t (id, t1) VALUES (-5, 'below every other node''s range')`)
	n1.Exec(t, `UPDATE t SET t2 = NULL WHERE id = 30`)
	n2.Exec(t, `UPDATE t SET t2 = '' WHERE id = 30`)
	// With a naive '|' separator both rows would read "a|b|c".
	n1.Exec(t, `UPDATE t SET t1 = 'a|b', t2 = 'c' WHERE id = 40`)
	n2.Exec(t, `UPDATE t SET t1 = 'a', t2 = 'b|c' WHERE id = 40`)
	n3.Exec(t, `UPDATE t SET t1 = 'a', t2 = 'b|c' WHERE id = 40`)
	n3.Exec(t, `UPDATE t SET t1 = 'it''s "quoted", (1,2) \ {x}' WHERE id = 41`)
	// Scale is not value: 3000.00 and 3000.0 are equal; so is one instant in two time zones.
	n1.Exec(t, `UPDATE t SET n = 3000.00, nf = 3000.00 WHERE id = 50`)
	n2.Exec(t, `UPDATE t SET n = 3000.0, nf = 3000.0 WHERE id = 50`)
	n3.Exec(t, `UPDATE t SET n = 3000, nf = 3000 WHERE id = 50`)
	n2.Exec(t, `UPDATE t SET ts = '2024-06-01 12:00:00+02' WHERE id = 51`)
	n1.Exec(t, `UPDATE t SET ts = '2024-06-01 10:00:00+00' WHERE id = 51`)
	n3.Exec(t, `UPDATE t SET ts = '2024-06-01 10:00:00+00' WHERE id = 51`)
	n2.Exec(t, `UPDATE t SET nf = nf + 0.0000001 WHERE id = 52`)
	n3.Exec(t, `UPDATE t SET ts = ts + interval '1 microsecond' WHERE id = 60`)
	n2.Exec(t, `UPDATE t SET j = j || '{"extra": true}' WHERE id = 70`)
	n3.Exec(t, `UPDATE t SET b = b || '\x00'::bytea WHERE id = 80`)
	n2.Exec(t, `UPDATE t SET u = '00000000-0000-0000-0000-000000000001' WHERE id = 90`)
	n3.Exec(t, `UPDATE t SET arr = ARRAY[1, NULL] WHERE id = 100`)
	n2.Exec(t, `UPDATE t SET tarr = ARRAY['a', 'b,c"d'] WHERE id = 101`)
	n2.Exec(t, `UPDATE t SET e = 'happy' WHERE id = 110 AND e <> 'happy'`)
	n2.Exec(t, `UPDATE t SET e = 'sad' WHERE id = 110 AND e = 'happy'`)
	want := []string{`{"id": -5}`, `{"id": 10}`, `{"id": 100}`, `{"id": 101}`, `{"id": 110}`, `{"id": 20}`, `{"id": 30}`,
		`{"id": 40}`, `{"id": 41}`, `{"id": 5000}`, `{"id": 52}`, `{"id": 60}`, `{"id": 70}`, `{"id": 80}`, `{"id": 90}`}
	sort.Strings(want)
	return want
}

func TestTableDiffIdenticalTablesAreInSync(t *testing.T) {
	t.Parallel()
	e := setup(t, typesDDL)
	e.ExecAll(typesRows)
	s, rows := e.completedDiff(`'public.t'`)
	require.Empty(t, rows)
	require.True(t, s.InSync())
	require.EqualValues(t, 2000, s.TotalRowsChecked)
	require.Equal(t, map[string]int64{"n1/n2": 0, "n1/n3": 0, "n2/n3": 0}, s.DiffRowsCount)
	require.Equal(t, []string{"id"}, s.PrimaryKey)
}

func TestTableDiffFindsExactlyThePlantedDifferences(t *testing.T) {
	t.Parallel()
	// Small blocks and leaves put differences on block and leaf boundaries and force narrowing.
	for _, sizes := range []struct{ block, unit int }{{100000, 100}, {100, 10}, {7, 2}} {
		t.Run(fmt.Sprintf("block%d_unit%d", sizes.block, sizes.unit), func(t *testing.T) {
			t.Parallel()
			e := setup(t, typesDDL)
			e.ExecAll(typesRows)
			want := plantTypeDrift(e)
			s, rows := e.completedDiff(`'public.t', block_size => $1, compare_unit_size => $2, override_block_size => true`, sizes.block, sizes.unit)
			require.Equal(t, want, keys(rows))
			require.EqualValues(t, len(want), s.DifferingKeys)
			require.EqualValues(t, 2001, s.TotalRowsChecked)

			require.Equal(t, "missing", rows[`{"id": 20}`].Kind)
			require.Nil(t, rows[`{"id": 20}`].Rows["n3"])
			require.NotNil(t, rows[`{"id": 20}`].Rows["n1"])
			require.Equal(t, "missing", rows[`{"id": 5000}`].Kind)
			require.Nil(t, rows[`{"id": 5000}`].Rows["n2"])
			require.Equal(t, "modified", rows[`{"id": 10}`].Kind)
			require.Equal(t, "changed", rows[`{"id": 10}`].Rows["n2"]["t1"])
			require.Equal(t, "text 10", rows[`{"id": 10}`].Rows["n1"]["t1"])
			require.Nil(t, rows[`{"id": 30}`].Rows["n1"]["t2"])
			require.Equal(t, "", rows[`{"id": 30}`].Rows["n2"]["t2"])
			require.Equal(t, `it's "quoted", (1,2) \ {x}`, rows[`{"id": 41}`].Rows["n3"]["t1"])

			// Per pair, as ACE counts: a key counts once for each pair that disagrees on it.
			require.Equal(t, map[string]int64{"n1/n2": 10, "n1/n3": 8, "n2/n3": 13}, s.DiffRowsCount)
		})
	}
}

func TestTableDiffCompositeKey(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.c (region text, seq int, at date, v text, PRIMARY KEY (region, seq, at))`)
	e.ExecAll(`INSERT INTO c SELECT r, s, date '2024-01-01' + s, r || s FROM unnest(ARRAY['eu', 'us', 'a,b', 'q"x']) r, generate_series(1, 300) s`)
	e.Node("n2").Exec(t, `UPDATE c SET v = 'changed' WHERE region = 'a,b' AND seq = 150`)
	e.Node("n3").Exec(t, `DELETE FROM c WHERE region = 'us' AND seq = 300`)
	e.Node("n1").Exec(t, `INSERT INTO c VALUES ('zz', 1, '2030-01-01', 'beyond the last range'), ('', 0, '1999-01-01', 'before the first')`)
	e.Node("n3").Exec(t, `UPDATE c SET v = NULL WHERE region = 'q"x' AND seq = 1`)
	// The units diff one table on one cluster: they run sequentially, without t.Parallel.
	for _, unit := range []int{100, 3} {
		t.Run(fmt.Sprintf("unit%d", unit), func(t *testing.T) {
			e := &diffEnv{Env: e.Env, t: t}
			s, rows := e.completedDiff(`'public.c', compare_unit_size => $1, block_size => 50, override_block_size => true`, unit)
			require.Equal(t, []string{
				`{"at": "1999-01-01", "seq": 0, "region": ""}`,
				`{"at": "2024-01-02", "seq": 1, "region": "q\"x"}`,
				`{"at": "2024-05-30", "seq": 150, "region": "a,b"}`,
				`{"at": "2024-10-27", "seq": 300, "region": "us"}`,
				`{"at": "2030-01-01", "seq": 1, "region": "zz"}`,
			}, keys(rows))
			require.Equal(t, []string{"region", "seq", "at"}, s.PrimaryKey)
		})
	}
}

func TestTableDiffEmptyNodeAgainstFullOne(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.big (id int PRIMARY KEY, v text)`)
	e.Node("n1").Exec(t, `INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 20000) g`)
	e.Node("n2").Exec(t, `INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 20000) g`)
	s, rows := e.completedDiff(`'public.big', nodes => ARRAY['n1', 'n3']`)
	require.Len(t, rows, 20000)
	require.Equal(t, []string{"n1", "n3"}, s.Nodes)
	require.Equal(t, map[string]int64{"n1/n3": 20000}, s.DiffRowsCount)
	require.Equal(t, map[string]int64{"n1": 20000, "n3": 0}, s.RowsPerNode)
}

func TestTableDiffMaxDiffRowsPerPair(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.m (id int PRIMARY KEY, v int)`)
	e.ExecAll(`INSERT INTO m SELECT g, g FROM generate_series(1, 1000) g`)
	e.Node("n2").Exec(t, `UPDATE m SET v = -v WHERE id % 10 = 0`)
	s, rows := e.completedDiff(`'public.m', max_diff_rows => 5`)
	require.True(t, s.DiffRowLimitReached)
	require.EqualValues(t, 5, s.DiffRowsCount["n1/n2"])
	require.EqualValues(t, 5, s.DiffRowsCount["n2/n3"])
	require.Len(t, rows, 5)
}

func TestTableDiffFilter(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.f (id int PRIMARY KEY, region text, v int)`)
	e.ExecAll(`INSERT INTO f SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 500) g`)
	e.Node("n2").Exec(t, `UPDATE f SET v = 0 WHERE id IN (10, 11)`)
	s, rows := e.completedDiff(`'public.f', table_filter => $1`, `region = 'eu'`)
	require.Equal(t, []string{`{"id": 10}`}, keys(rows))
	require.EqualValues(t, 250, s.TotalRowsChecked)
	require.Equal(t, "region = 'eu'", s.TableFilter)
}

func TestTableDiffFilterCannotWrite(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE public.w (id int PRIMARY KEY, v int);
		CREATE FUNCTION public.sneaky() RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN DELETE FROM public.w; RETURN true; END $$`)
	e.ExecAll(`INSERT INTO w SELECT g, g FROM generate_series(1, 100) g`)
	// The filters run against one table, which the count below checks after them all: they run
	// sequentially, without t.Parallel.
	for _, filter := range []string{`id > 0; DELETE FROM w`, `public.sneaky()`, `id IN (SELECT 1 FROM pg_sleep(0)) --`} {
		t.Run(filter, func(t *testing.T) {
			e := &diffEnv{Env: e.Env, t: t}
			_, task := e.diff(`'public.w', table_filter => $1`, filter)
			require.Equal(t, "FAILED", string(task.Status), "filter %q", filter)
			require.Contains(t, *task.Error, "table_filter", "filter %q", filter)
		})
	}
	for _, n := range e.Nodes {
		var count int
		require.NoError(t, n.Pool.QueryRow(t.Context(), `SELECT count(*) FROM w`).Scan(&count))
		require.Equal(t, 100, count, "rows on %s", n.Name)
	}
}

func TestTableDiffFilterCannotEscapeTheSubmittersRole(t *testing.T) {
	t.Parallel()
	e := setup(t, `CREATE TABLE fe (id int PRIMARY KEY, region text, at timestamptz DEFAULT '2030-01-01');
		CREATE TABLE secret (v text);
		CREATE FUNCTION public.becomes_superuser() RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RESET ROLE; RETURN true; END $$;
		CREATE FUNCTION public.harmless_sql(int) RETURNS boolean LANGUAGE sql AS 'SELECT $1 > 0';
		CREATE OPERATOR public.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq)`)
	e.ExecAll(`INSERT INTO fe SELECT g, 'eu' FROM generate_series(1, 10) g`)
	// The filters run against one table on one cluster: they run sequentially, without t.Parallel.
	for _, c := range []struct{ filter, why string }{
		{`public.becomes_superuser()`, "not built in"},
		{`public.harmless_sql(id)`, "not built in"},
		{`id OPERATOR(public.===) 1`, "not built in"},
		{`set_config('role', 'postgres', true) IS NOT NULL`, "set_config()"},
		{`query_to_xml('select 1', true, true, '') IS NOT NULL`, "query_to_xml()"},
		{`id IN (SELECT length(v) FROM secret)`, "reads public.secret"},
		{`pg_read_file('/etc/hostname') <> ''`, "pg_read_file()"},
	} {
		t.Run(c.filter, func(t *testing.T) {
			e := &diffEnv{Env: e.Env, t: t}
			_, task := e.diff(`'public.fe', table_filter => $1`, c.filter)
			require.Equal(t, "FAILED", string(task.Status), c.filter)
			require.Contains(t, *task.Error, c.why, c.filter)
		})
	}
	_, rows := e.completedDiff(`'public.fe', table_filter => $1`, `region = 'eu' AND lower(region) LIKE 'e%' AND at > now() - interval '1 day' AND id = ANY(ARRAY[1, 2, 3]) AND coalesce(region, '') <> ''`)
	require.Empty(t, rows)
}
