package engine_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/engine"
)

// A property test of the row hash on real PostgreSQL: for every column type, pairs of values
// that differ under the value semantics must give different block summaries, and pairs that are
// the same must give the same one. Set ACE_PROPERTY_SEED to explore other values.

// pairGen makes one pair of SQL expressions of the column's type.
type pairGen func(r *rand.Rand) (a, b string)

// oneOf picks one of the mutations.
func oneOf(r *rand.Rand, gens ...func() (string, string)) (string, string) {
	return gens[r.IntN(len(gens))]()
}

func lit(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func randText(r *rand.Rand) string {
	const alphabet = `ab ,"'\{}()[]|:=-.0123456789é€NULL`
	n := r.IntN(12)
	if r.IntN(6) == 0 {
		n = 1000 + r.IntN(4000) // long texts
	}
	var b strings.Builder
	runes := []rune(alphabet)
	for range n {
		b.WriteRune(runes[r.IntN(len(runes))])
	}
	return b.String()
}

// highBits is an int64 with bits set in both words, often negative.
func highBits(r *rand.Rand) int64 { return int64(r.Uint64()) >> r.IntN(40) }

// folded is a different int64 with the same XOR of its two 32-bit words.
func folded(v int64) int64 { return v ^ (1<<32 | 1) }

func randNumeric(r *rand.Rand) string {
	s := strconv.FormatInt(r.Int64N(1_000_000_000)-500_000_000, 10)
	if r.IntN(2) == 0 {
		s += "." + strconv.Itoa(1+r.IntN(9)) // no trailing zero: distinct texts are distinct values
	}
	return s
}

func neg(s string) string {
	if strings.HasPrefix(s, "-") {
		return s[1:]
	}
	return "-" + s
}

func randJSON(r *rand.Rand, depth int) string {
	switch k := r.IntN(6); {
	case depth > 2 || k == 0:
		return randNumeric(r)
	case k == 1:
		return strconv.Quote(fmt.Sprintf("s%d", r.IntN(1000)))
	case k == 2:
		return []string{"true", "false", "null"}[r.IntN(3)]
	case k == 3:
		var el []string
		for range r.IntN(4) {
			el = append(el, randJSON(r, depth+1))
		}
		return "[" + strings.Join(el, ", ") + "]"
	default:
		var el []string
		for i := range r.IntN(4) {
			el = append(el, fmt.Sprintf(`"k%d": %s`, i, randJSON(r, depth+1)))
		}
		return "{" + strings.Join(el, ", ") + "}"
	}
}

func randInts(r *rand.Rand, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = strconv.Itoa(r.IntN(20) - 10)
	}
	return out
}

var typeGens = []struct {
	typ string
	gen pairGen
}{
	{"int2", func(r *rand.Rand) (string, string) {
		v := int16(r.Uint32())
		return oneOf(r, func() (string, string) { return fmt.Sprint(v), fmt.Sprint(v ^ 1) },
			func() (string, string) { return "0", "NULL" })
	}},
	{"int4", func(r *rand.Rand) (string, string) {
		v := int32(r.Uint32())
		return oneOf(r, func() (string, string) { return fmt.Sprint(v), fmt.Sprint(v ^ 1<<16) },
			func() (string, string) { return "-1", "NULL" })
	}},
	{"int8", func(r *rand.Rand) (string, string) {
		v := highBits(r)
		return oneOf(r, func() (string, string) { return fmt.Sprint(v), fmt.Sprint(folded(v)) },
			func() (string, string) { return "-1", "4294967295" },
			func() (string, string) { return "0", "NULL" })
	}},
	{"numeric", func(r *rand.Rand) (string, string) {
		v := randNumeric(r)
		return oneOf(r, func() (string, string) { return v, neg(v) },
			func() (string, string) { return "0", "NULL" },
			func() (string, string) { return "'NaN'", "'Infinity'" },
			func() (string, string) { return "'Infinity'", "'-Infinity'" },
			func() (string, string) { return v, v + "0001" })
	}},
	{"float4", func(r *rand.Rand) (string, string) {
		v := r.Float32()*1000 - 500
		return oneOf(r, func() (string, string) { return fmt.Sprint(v), fmt.Sprint(math.Nextafter32(v, 1e9)) },
			func() (string, string) { return "'0'", "'-0'" },
			func() (string, string) { return "'NaN'", "'Infinity'" },
			func() (string, string) { return "'-Infinity'", "NULL" })
	}},
	{"float8", func(r *rand.Rand) (string, string) {
		v := math.Float64frombits(r.Uint64() >> 2)
		return oneOf(r, func() (string, string) {
			return strconv.FormatFloat(v, 'g', -1, 64), strconv.FormatFloat(math.Nextafter(v, math.Inf(1)), 'g', -1, 64)
		},
			func() (string, string) { return "'0'", "'-0'" },
			func() (string, string) { return "'Infinity'", "'-Infinity'" },
			func() (string, string) { return "'NaN'", "0" })
	}},
	{"text", func(r *rand.Rand) (string, string) {
		s := randText(r)
		return oneOf(r, func() (string, string) { return lit(s), lit(s + "x") },
			func() (string, string) { return "''", "NULL" },
			func() (string, string) { return lit(s), lit(s + " ") },
			func() (string, string) { return lit("NULL"), "NULL" })
	}},
	{"varchar(6000)", func(r *rand.Rand) (string, string) {
		s := randText(r)
		return lit(s + "a"), lit(s + "b")
	}},
	{"char(8)", func(r *rand.Rand) (string, string) { return lit("ab"), lit("a b") }},
	{"bytea", func(r *rand.Rand) (string, string) {
		b := make([]byte, 1+r.IntN(40))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		c := append([]byte(nil), b...)
		c[r.IntN(len(c))] ^= 1 << r.IntN(8)
		return oneOf(r, func() (string, string) { return fmt.Sprintf(`'\x%x'`, b), fmt.Sprintf(`'\x%x'`, c) },
			func() (string, string) { return `''`, "NULL" },
			func() (string, string) { return `'\x00'`, `''` })
	}},
	{"bool", func(r *rand.Rand) (string, string) {
		return oneOf(r, func() (string, string) { return "true", "false" }, func() (string, string) { return "false", "NULL" })
	}},
	{"date", func(r *rand.Rand) (string, string) {
		d := r.IntN(100000) - 50000
		return oneOf(r, func() (string, string) {
			return fmt.Sprintf("'2000-01-01'::date + %d", d), fmt.Sprintf("'2000-01-01'::date + %d", -d-1)
		},
			func() (string, string) { return "'infinity'", "'-infinity'" })
	}},
	{"time", func(r *rand.Rand) (string, string) {
		v := r.Int64N(1 << 32)
		return fmt.Sprintf("'00:00:00'::time + make_interval(secs => %d / 1e6)", v),
			fmt.Sprintf("'00:00:00'::time + make_interval(secs => %d / 1e6)", v^(1<<32|1))
	}},
	{"timetz", func(r *rand.Rand) (string, string) {
		return lit(fmt.Sprintf("12:%02d:00+02", r.IntN(60))), lit(fmt.Sprintf("12:%02d:00+03", r.IntN(60)))
	}},
	{"timestamp", func(r *rand.Rand) (string, string) {
		v := highBits(r) % (1 << 50)
		return oneOf(r, func() (string, string) {
			return fmt.Sprintf("'2000-01-01'::timestamp + make_interval(secs => %d / 1e6)", v),
				fmt.Sprintf("'2000-01-01'::timestamp + make_interval(secs => %d / 1e6)", folded(v))
		},
			func() (string, string) { return "'infinity'", "'2000-01-01 00:35:47.483648'" })
	}},
	{"timestamptz", func(r *rand.Rand) (string, string) {
		v := highBits(r) % (1 << 50)
		return fmt.Sprintf("'2000-01-01+00'::timestamptz + make_interval(secs => %d / 1e6)", v),
			fmt.Sprintf("'2000-01-01+00'::timestamptz + make_interval(secs => %d / 1e6)", folded(v))
	}},
	{"interval", func(r *rand.Rand) (string, string) {
		d := r.IntN(1000)
		return oneOf(r, func() (string, string) { return fmt.Sprintf("'%d days'", d), fmt.Sprintf("'%d hours'", 24*d) },
			func() (string, string) { return fmt.Sprintf("'%d mons'", d), fmt.Sprintf("'%d days'", 30*d) },
			func() (string, string) { return fmt.Sprintf("'%d seconds'", d), fmt.Sprintf("'-%d seconds'", d+1) })
	}},
	{"uuid", func(r *rand.Rand) (string, string) {
		a := fmt.Sprintf("%016x%016x", r.Uint64(), r.Uint64())
		b := []byte(a)
		i := r.IntN(32)
		b[i] = "0123456789abcdef"[(strings.IndexByte("0123456789abcdef", b[i])+1)%16]
		return lit(a), lit(string(b))
	}},
	{"inet", func(r *rand.Rand) (string, string) {
		ip := fmt.Sprintf("10.%d.%d.%d", r.IntN(256), r.IntN(256), r.IntN(256))
		return lit(ip + "/24"), lit(ip + "/25")
	}},
	{"jsonb", func(r *rand.Rand) (string, string) {
		j := randJSON(r, 0)
		return oneOf(r, func() (string, string) { return lit(j), lit("[" + j + "]") },
			func() (string, string) { return "'{}'", "'[]'" },
			func() (string, string) { return `'{"a": 5}'`, `'{"a": -5}'` },
			func() (string, string) { return `'{"a": {"b": 1}, "c": 2}'`, `'{"a": {"b": 1, "c": 2}}'` },
			func() (string, string) { return `'{"a": "1"}'`, `'{"a": 1}'` },
			func() (string, string) { return `'{"a": null}'`, `'{}'` },
			func() (string, string) { return lit(`{"x": ` + j + `}`), lit(`{"y": ` + j + `}`) })
	}},
	{"json", func(r *rand.Rand) (string, string) {
		j := randJSON(r, 0)
		return lit(j), lit(" " + j)
	}},
	{"int4[]", func(r *rand.Rand) (string, string) {
		v := randInts(r, 4)
		return oneOf(r, func() (string, string) {
			return lit(fmt.Sprintf("{{%s,%s},{%s,%s}}", v[0], v[1], v[2], v[3])), lit("{" + strings.Join(v, ",") + "}")
		},
			func() (string, string) {
				return lit("[0:1]={" + v[0] + "," + v[1] + "}"), lit("{" + v[0] + "," + v[1] + "}")
			},
			func() (string, string) { return "'{0}'", "'{NULL}'" },
			func() (string, string) { return "'{}'", "NULL" },
			func() (string, string) { return lit("{" + v[0] + ",100}"), lit("{100," + v[0] + "}") })
	}},
	{"int8[]", func(r *rand.Rand) (string, string) {
		v := highBits(r)
		return lit(fmt.Sprintf("{%d}", v)), lit(fmt.Sprintf("{%d}", folded(v)))
	}},
	{"numeric[]", func(r *rand.Rand) (string, string) {
		v := randNumeric(r)
		return oneOf(r, func() (string, string) { return "'{0}'", "'{NULL}'" },
			func() (string, string) { return lit("{" + v + "}"), lit("{" + neg(v) + "}") },
			func() (string, string) { return lit("{{" + v + "}}"), lit("{" + v + "}") })
	}},
	{"text[]", func(r *rand.Rand) (string, string) {
		s := randText(r)
		return oneOf(r, func() (string, string) { return "ARRAY[" + lit(s) + "]", "ARRAY[" + lit(s) + ", '']" },
			func() (string, string) { return "ARRAY['NULL']", "ARRAY[NULL]::text[]" },
			func() (string, string) { return "ARRAY['a,b']", "ARRAY['a', 'b']" })
	}},
	{"int4range", func(r *rand.Rand) (string, string) {
		lo := r.IntN(100)
		return oneOf(r, func() (string, string) {
			return lit(fmt.Sprintf("[%d,%d)", lo, lo+10)), lit(fmt.Sprintf("[%d,%d]", lo, lo+10))
		},
			func() (string, string) { return "'empty'", "NULL" })
	}},
	{"numrange", func(r *rand.Rand) (string, string) {
		v := randNumeric(r)
		return lit("[" + v + ",)"), lit("[" + neg(v) + ",)")
	}},
	{"tstzrange", func(r *rand.Rand) (string, string) {
		d := r.IntN(1000)
		return lit(fmt.Sprintf("[2024-01-01,2024-02-01 00:00:%02d)", d%60)), lit(fmt.Sprintf("(2024-01-01,2024-02-01 00:00:%02d)", d%60))
	}},
	{"pair", func(r *rand.Rand) (string, string) {
		v := randNumeric(r)
		return oneOf(r, func() (string, string) { return "NULL", "ROW(NULL, NULL, NULL)::pair" },
			func() (string, string) {
				return fmt.Sprintf("ROW(1, %s, 'x')::pair", v), fmt.Sprintf("ROW(1, %s, 'x')::pair", neg(v))
			},
			func() (string, string) { return "ROW(1, 2, NULL)::pair", "ROW(2, 1, NULL)::pair" },
			func() (string, string) { return "ROW(1, NULL, '')::pair", "ROW(1, NULL, NULL)::pair" })
	}},
	{"mood", func(r *rand.Rand) (string, string) { return "'ok'", []string{"'sad'", "'happy'", "NULL"}[r.IntN(3)] }},
	{"money", func(r *rand.Rand) (string, string) {
		v := r.IntN(100000)
		return fmt.Sprintf("%d.%02d", v, v%100), fmt.Sprintf("-%d.%02d", v, v%100)
	}},
	{"varbit", func(r *rand.Rand) (string, string) { return "B'101'", "B'1010'" }},
	{"macaddr", func(r *rand.Rand) (string, string) {
		return lit(fmt.Sprintf("08:00:2b:01:02:%02x", r.IntN(255))), lit(fmt.Sprintf("08:00:2b:01:03:%02x", r.IntN(255)))
	}},
	{"tsvector", func(r *rand.Rand) (string, string) { return "'a fat cat'", "'a fat rat'" }},
	{"point", func(r *rand.Rand) (string, string) {
		return oneOf(r, func() (string, string) { return "'(1,2)'", "'(2,1)'" }, func() (string, string) { return "'(0,0)'", "'(-0,0)'" })
	}},
	{"amount", func(r *rand.Rand) (string, string) { v := randNumeric(r); return v, neg(v) }},
	{"xml", func(r *rand.Rand) (string, string) { return "'<a x=\"1\"/>'", "'<a x=\"2\"/>'" }},
}

// samePairs are values that differ in text but not under the value semantics.
var samePairs = []struct{ typ, a, b string }{
	{"numeric", "3000.00", "3000.0"},
	{"numeric", "-0.100", "-0.1"},
	{"numeric[]", "'{1.50,2.00}'", "'{1.5,2}'"},
	{"numeric[]", "'[0:1][1:1]={{1.0},{2.0}}'", "'[0:1][1:1]={{1},{2}}'"},
	{"numrange", "'[1.50,2.00)'", "'[1.5,2)'"},
	{"pair", "ROW(1, 2.50, 'x')::pair", "ROW(1, 2.5, 'x')::pair"},
	{"pair[]", "ARRAY[ROW(1, 2.50, 'x')::pair]", "ARRAY[ROW(1, 2.5, 'x')::pair]"},
	{"jsonb", `'{"a": [1.50, {"b": 2.000, "c": "1.50"}]}'`, `'{"a": [1.5, {"b": 2, "c": "1.50"}]}'`},
	{"jsonb", `'{ "b":1,  "a" : 2 }'`, `'{"a": 2, "b": 1}'`},
	{"jsonb[]", `ARRAY['{"a": 1.0}'::jsonb]`, `ARRAY['{"a": 1}'::jsonb]`},
	{"amount", "5.10", "5.1"},
	{"timestamptz", "'2024-01-01 12:00:00+02'", "'2024-01-01 10:00:00+00'"},
	{"char(8)", "'ab'", "'ab   '"},
	{"float8", "'NaN'", "'Infinity'::float8 - 'Infinity'::float8"},
}

const propertyDDL = `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
	CREATE TYPE pair AS (a int, b numeric, c text);
	CREATE DOMAIN amount AS numeric CHECK (VALUE > -1e12)`

// summaryKinds are the two ways a table-diff summarises a leaf, each applied to every row as a
// leaf of its own: additive lanes and the ordered digest.
var summaryKinds = map[string]func(ctx context.Context, n *engine.Node, table string) (map[string]string, error){
	"lanes":   engine.RowSummaries,
	"ordered": engine.LeafDigests,
}

func propertySeed(t *testing.T) uint64 {
	seed := uint64(20261130)
	if s := os.Getenv("ACE_PROPERTY_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "ACE_PROPERTY_SEED")
		seed = v
	}
	t.Logf("seed %d (set ACE_PROPERTY_SEED to change it)", seed)
	return seed
}

func TestDistinctValuesGiveDistinctBlockSummaries(t *testing.T) {
	t.Parallel()
	seed := propertySeed(t)
	e, nodes := engineEnv(t, propertyDDL)
	const pairsPerType = 40
	require.GreaterOrEqual(t, len(typeGens), 25)
	for i, g := range typeGens {
		t.Run(g.typ, func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, uint64(i)))
			var as, bs []string
			for j := range pairsPerType {
				a, b := g.gen(r)
				as = append(as, fmt.Sprintf("(%d, %s)", j, a))
				bs = append(bs, fmt.Sprintf("(%d, %s)", j, b))
			}
			ta, tb := fmt.Sprintf("pa%d", i), fmt.Sprintf("pb%d", i)
			e.Node("n1").Exec(t, fmt.Sprintf(`CREATE TABLE %[1]s (id int PRIMARY KEY, v %[3]s); CREATE TABLE %[2]s (LIKE %[1]s INCLUDING ALL);
				INSERT INTO %[1]s VALUES %[4]s; INSERT INTO %[2]s VALUES %[5]s`, ta, tb, g.typ, strings.Join(as, ", "), strings.Join(bs, ", ")))
			for name, summaries := range summaryKinds {
				sa, err := summaries(context.Background(), nodes[0], ta)
				require.NoError(t, err)
				sb, err := summaries(context.Background(), nodes[0], tb)
				require.NoError(t, err)
				require.Len(t, sa, pairsPerType)
				for j := range pairsPerType {
					k := strconv.Itoa(j)
					require.NotEqual(t, sa[k], sb[k], "seed %d, %s, %s: %s vs %s have one summary", seed, name, g.typ, as[j], bs[j])
				}
			}
			// As one leaf of 40 rows, the tables differ; and the leaf's digest is that of its
			// rows, whatever order they are stored in.
			da, err := engine.TableDigest(context.Background(), nodes[0], ta, pairsPerType)
			require.NoError(t, err)
			db, err := engine.TableDigest(context.Background(), nodes[0], tb, pairsPerType)
			require.NoError(t, err)
			require.NotEqual(t, da, db, "seed %d, %s: the tables have one ordered digest", seed, g.typ)
			e.Node("n1").Exec(t, fmt.Sprintf(`CREATE TABLE %[1]sr (LIKE %[1]s INCLUDING ALL); INSERT INTO %[1]sr SELECT * FROM %[1]s ORDER BY id DESC`, ta))
			dr, err := engine.TableDigest(context.Background(), nodes[0], ta+"r", pairsPerType)
			require.NoError(t, err)
			require.Equal(t, da, dr, "seed %d, %s: the ordered digest depends on the rows' physical order", seed, g.typ)
			// A leaf over its cap reads one row more than the cap, and no more: the count says it
			// overflowed, and the diff narrows such a leaf row by row.
			capped, err := engine.TableDigest(context.Background(), nodes[0], ta, pairsPerType/4)
			require.NoError(t, err)
			require.True(t, strings.HasPrefix(capped, fmt.Sprintf("%d/", pairsPerType/4+1)), "capped leaf: %s", capped)
		})
	}
}

func TestEqualValuesGiveEqualBlockSummaries(t *testing.T) {
	t.Parallel()
	e, nodes := engineEnv(t, propertyDDL)
	for i, c := range samePairs {
		t.Run(fmt.Sprintf("%s %s = %s", c.typ, c.a, c.b), func(t *testing.T) {
			ta, tb := fmt.Sprintf("sa%d", i), fmt.Sprintf("sb%d", i)
			e.Node("n1").Exec(t, fmt.Sprintf(`CREATE TABLE %[1]s (id int PRIMARY KEY, v %[3]s); CREATE TABLE %[2]s (LIKE %[1]s INCLUDING ALL);
				INSERT INTO %[1]s VALUES (1, %[4]s); INSERT INTO %[2]s VALUES (1, %[5]s)`, ta, tb, c.typ, c.a, c.b))
			for name, summaries := range summaryKinds {
				sa, err := summaries(context.Background(), nodes[0], ta)
				require.NoError(t, err)
				sb, err := summaries(context.Background(), nodes[0], tb)
				require.NoError(t, err)
				require.Equal(t, sa, sb, name)
			}
		})
	}
}
