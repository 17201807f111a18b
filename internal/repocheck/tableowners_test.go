package repocheck

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The owners of the ace tables are ARCHITECTURE.md's table under ownersHeading: one row per
// table, its Go owner in the second column (a package path from the repository root, or "—" when
// no Go code writes it). The check reads the table there, so the page and the check cannot drift.
const (
	architecturePath = "ARCHITECTURE.md"
	ownersHeading    = "## Who writes each `ace` table"
	noGoOwner        = "—"
)

// notStatements are string literals that name a write to a table without being one the package
// runs: a hint in an error message, telling the user what to run. Keyed by file and table.
var notStatements = map[string]string{
	"agent/limits.go ace.settings": "the max_task_runtime error tells the schema's owner the UPDATE that raises the limit",
}

// writeStmt finds a statement that writes an ace table; the table is the last group.
var writeStmt = regexp.MustCompile(`(?i)\b(INSERT\s+INTO|UPDATE|DELETE\s+FROM|COPY|TRUNCATE(?:\s+TABLE)?)\s+(?:ONLY\s+)?ace\.(\w+)`)

// write is a statement writing table found at pos.
type write struct {
	table string
	pos   string
}

func TestEveryAceTableHasOneGoOwner(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	owners := readOwners(t, filepath.Join(root, architecturePath))
	require.ElementsMatch(t, createdTables(t, root), keys(owners),
		"%s's section %q must list every table the migrations create, once", architecturePath, ownersHeading)
	writes := writesByPackage(t, root)
	var wrong []string
	for pkg, ws := range writes {
		for _, w := range ws {
			owner, known := owners[w.table]
			switch {
			case !known:
				wrong = append(wrong, fmt.Sprintf("%s writes ace.%s, which %s does not list", w.pos, w.table, architecturePath))
			case owner != pkg && notStatements[filepath.ToSlash(strings.SplitN(w.pos, ":", 2)[0])+" ace."+w.table] == "":
				wrong = append(wrong, fmt.Sprintf("%s writes ace.%s in package %s; its owner is %s: call a function of the owner instead", w.pos, w.table, pkg, owner))
			}
		}
	}
	sort.Strings(wrong)
	require.Empty(t, wrong, "each ace table is written from one Go package, its owner in %s (%q):\n%s",
		architecturePath, ownersHeading, strings.Join(wrong, "\n"))
}

// TestWritingFunctionsAreCalledByTheOwner keeps the calls of the SQL functions that write a table
// (ace.remove_node, ace.cancel, ace.mtree_adopt_trees, …) in the table's owner too: a query
// that runs one, such as q.Exec(ctx, "SELECT ace.remove_node($1)", name), is a write as much as
// the statement inside it. Queries are the string literals passed straight to Exec, Query or
// QueryRow.
func TestWritingFunctionsAreCalledByTheOwner(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	owners := readOwners(t, filepath.Join(root, architecturePath))
	writers := writingFunctions(t, root)
	require.Contains(t, writers, "remove_node", "the scan of migrations/code must find the functions that write tables")
	var wrong []string
	for pkg, queries := range queriesByPackage(t, root) {
		for _, q := range queries {
			for _, m := range functionCall.FindAllStringSubmatch(sqlString.ReplaceAllString(q.text, "''"), -1) {
				for _, table := range writers[strings.ToLower(m[1])] {
					if owners[table] != pkg {
						wrong = append(wrong, fmt.Sprintf("%s calls ace.%s, which writes ace.%s, in package %s; its owner is %s: call a function of the owner instead",
							q.pos, m[1], table, pkg, owners[table]))
					}
				}
			}
		}
	}
	sort.Strings(wrong)
	require.Empty(t, wrong, "the functions writing an ace table are called from its owner in %s:\n%s", architecturePath, strings.Join(wrong, "\n"))
}

// functionCall finds a call of an ace function; the function is the group.
var functionCall = regexp.MustCompile(`(?i)\bace\.(\w+)\s*\(`)

// sqlFunction is the start of a function or procedure of migrations/code; the name is the group.
var sqlFunction = regexp.MustCompile(`(?i)CREATE\s+OR\s+REPLACE\s+(?:FUNCTION|PROCEDURE)\s+ace\.(\w+)`)

// sqlString is a single-quoted SQL string: its text is a message, not a statement.
var sqlString = regexp.MustCompile(`'(?:[^']|'')*'`)

// writingFunctions are the functions of migrations/code that write tables, directly or through
// another such function: function name to the tables it writes.
func writingFunctions(t *testing.T, root string) map[string][]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "migrations", "code", "*.sql"))
	require.NoError(t, err)
	sort.Strings(files)
	bodies := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		text := string(b)
		starts := sqlFunction.FindAllStringSubmatchIndex(text, -1)
		for i, st := range starts {
			end := len(text)
			if i+1 < len(starts) {
				end = starts[i+1][0]
			}
			name := strings.ToLower(text[st[2]:st[3]])
			bodies[name] += sqlString.ReplaceAllString(text[st[1]:end], "''")
		}
	}
	writes := map[string]map[string]bool{}
	for name, body := range bodies {
		writes[name] = map[string]bool{}
		for _, m := range writeStmt.FindAllStringSubmatch(body, -1) {
			writes[name][strings.ToLower(m[len(m)-1])] = true
		}
	}
	for changed := true; changed; {
		changed = false
		for name, body := range bodies {
			for _, m := range functionCall.FindAllStringSubmatch(body, -1) {
				for table := range writes[strings.ToLower(m[1])] {
					if !writes[name][table] {
						writes[name][table], changed = true, true
					}
				}
			}
		}
	}
	out := map[string][]string{}
	for name, tables := range writes {
		if len(tables) > 0 {
			out[name] = keys(tables)
		}
	}
	return out
}

// queriesByPackage lists the string literals passed as the query to Exec, Query or QueryRow in
// every non-test Go file, by package directory.
func queriesByPackage(t *testing.T, root string) map[string][]literal {
	t.Helper()
	queries := map[string][]literal{}
	forEachGoFile(t, root, func(pkg string, fset *token.FileSet, f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) < 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !slices.Contains([]string{"Exec", "Query", "QueryRow"}, sel.Sel.Name) {
				return true
			}
			if s, ok := literalText(call.Args[1]); ok {
				queries[pkg] = append(queries[pkg], literal{text: s, pos: fset.Position(call.Args[1].Pos()).String()})
			}
			return true
		})
	})
	return queries
}

// notifyStmt finds a notification sent from SQL.
var notifyStmt = regexp.MustCompile(`(?i)\bpg_notify\s*\(|\bNOTIFY\s+\w`)

// TestEngineSendsNoNotifications keeps NOTIFY out of engine and its packages: the engine knows
// nothing of the queue or of who listens; the agent passes what wakes it (mtree.WakeFunc).
func TestEngineSendsNoNotifications(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	var found []string
	for pkg, lits := range literalsByPackage(t, root) {
		if pkg != "engine" && !strings.HasPrefix(pkg, "engine/") {
			continue
		}
		for _, l := range lits {
			if notifyStmt.MatchString(l.text) {
				found = append(found, l.pos)
			}
		}
	}
	sort.Strings(found)
	require.Empty(t, found, "engine sends a notification; send it from agent instead")
}

func TestWriteScanner(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		src  string
		want []string
	}{
		{name: "insert", src: "const q = `INSERT INTO ace.tasks (a) VALUES (1)`", want: []string{"tasks"}},
		{name: "lower case and new lines", src: "var q = \"delete\\n  from ace.claims\"", want: []string{"claims"}},
		{name: "update in a CTE", src: "var q = `WITH x AS (SELECT 1) UPDATE ace.mtrees m SET a = 1`", want: []string{"mtrees"}},
		{name: "concatenation", src: "var q = \"UPDATE \" + \"ace.agents SET x = 1\"", want: []string{"agents"}},
		{name: "copy from", src: "var x = pgx.Identifier{\"ace\", \"mtree_leaves\"}", want: []string{"mtree_leaves"}},
		{name: "truncate", src: "var q = `TRUNCATE ace.mtree_pending`", want: []string{"mtree_pending"}},
		{name: "a read", src: "var q = `SELECT * FROM ace.tasks`", want: nil},
		{name: "a comment", src: "// INSERT INTO ace.tasks\nvar q = 1", want: nil},
		{name: "another schema", src: "var q = `UPDATE public.tasks SET a = 1`", want: nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, "x.go", "package x\n"+c.src+"\n", parser.SkipObjectResolution)
			require.NoError(t, err)
			var got []string
			for _, w := range fileWrites(fset, f) {
				got = append(got, w.table)
			}
			require.Equal(t, c.want, got)
		})
	}
}

// moduleRoot is the directory of go.mod, two up from this package.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.mod"))
	require.NoError(t, err, "the repository root (with go.mod) must be two directories above internal/repocheck")
	return root
}

// readOwners reads the owners table of ARCHITECTURE.md: table name (without "ace.") to package.
func readOwners(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	owners, err := parseOwners(f)
	require.NoError(t, err, "read the table owners from %s", path)
	return owners
}

var ownerRow = regexp.MustCompile("^\\|\\s*`ace\\.(\\w+)`\\s*\\|\\s*([^|]*?)\\s*\\|")

func parseOwners(r io.Reader) (map[string]string, error) {
	owners := map[string]string{}
	in := false
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = line == ownersHeading
			continue
		}
		m := ownerRow.FindStringSubmatch(line)
		if !in || m == nil {
			continue
		}
		if _, dup := owners[m[1]]; dup {
			return nil, fmt.Errorf("ace.%s is listed twice", m[1])
		}
		owner := strings.Trim(m[2], "`")
		if owner != noGoOwner && !regexp.MustCompile(`^[a-z0-9_/-]+$`).MatchString(owner) {
			return nil, fmt.Errorf("ace.%s: the owner %q is not one package path (or %s)", m[1], m[2], noGoOwner)
		}
		owners[m[1]] = owner
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(owners) == 0 {
		return nil, fmt.Errorf("no section %q with rows | `ace.<table>` | `<package>` | …", ownersHeading)
	}
	return owners, nil
}

// createdTables are the tables the numbered migrations create and do not drop.
func createdTables(t *testing.T, root string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "migrations", "*.sql"))
	require.NoError(t, err)
	created := regexp.MustCompile(`(?i)CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?ace\.(\w+)`)
	dropped := regexp.MustCompile(`(?i)DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?ace\.(\w+)`)
	tables := map[string]bool{}
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, m := range created.FindAllStringSubmatch(string(b), -1) {
			tables[m[1]] = true
		}
		for _, m := range dropped.FindAllStringSubmatch(string(b), -1) {
			delete(tables, m[1])
		}
	}
	return keys(tables)
}

// writesByPackage finds the writes of every non-test Go file, by package directory.
func writesByPackage(t *testing.T, root string) map[string][]write {
	t.Helper()
	writes := map[string][]write{}
	forEachGoFile(t, root, func(pkg string, fset *token.FileSet, f *ast.File) {
		writes[pkg] = append(writes[pkg], fileWrites(fset, f)...)
	})
	return writes
}

// literal is a string literal's text (a concatenation of literals taken whole) and position.
type literal struct {
	text, pos string
}

// literalsByPackage lists the string literals of every non-test Go file, by package directory.
func literalsByPackage(t *testing.T, root string) map[string][]literal {
	t.Helper()
	lits := map[string][]literal{}
	forEachGoFile(t, root, func(pkg string, fset *token.FileSet, f *ast.File) {
		ast.Inspect(f, func(n ast.Node) bool {
			e, ok := n.(ast.Expr)
			if !ok {
				return true
			}
			if s, ok := literalText(e); ok {
				lits[pkg] = append(lits[pkg], literal{text: s, pos: fset.Position(e.Pos()).String()})
				return false
			}
			return true
		})
	})
	return lits
}

// forEachGoFile parses every non-test Go file under root (but testdata, vendor and hidden
// directories) and calls fn with its package directory, relative to root.
func forEachGoFile(t *testing.T, root string, fn func(pkg string, fset *token.FileSet, f *ast.File)) {
	t.Helper()
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, filepath.ToSlash(rel), src, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		fn(filepath.ToSlash(filepath.Dir(rel)), fset, f)
		return nil
	})
	require.NoError(t, err)
}

// fileWrites finds the statements in f's string literals (a concatenation of literals taken
// whole) that write an ace table, and the pgx.Identifier{"ace", table} that CopyFrom writes.
func fileWrites(fset *token.FileSet, f *ast.File) []write {
	var out []write
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BinaryExpr:
			if s, ok := literalText(n); ok {
				out = append(out, stmtWrites(fset, n.Pos(), s)...)
				return false
			}
		case *ast.BasicLit:
			if s, ok := literalText(n); ok {
				out = append(out, stmtWrites(fset, n.Pos(), s)...)
			}
		case *ast.CompositeLit:
			if table, ok := aceIdentifier(n); ok {
				out = append(out, write{table: table, pos: fset.Position(n.Pos()).String()})
				return false
			}
		}
		return true
	})
	return out
}

func stmtWrites(fset *token.FileSet, pos token.Pos, s string) []write {
	var out []write
	for _, m := range writeStmt.FindAllStringSubmatch(s, -1) {
		out = append(out, write{table: strings.ToLower(m[len(m)-1]), pos: fset.Position(pos).String()})
	}
	return out
}

// literalText is the text of a string literal or of a + of string literals.
func literalText(e ast.Expr) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(e.Value)
		return s, err == nil
	case *ast.BinaryExpr:
		if e.Op != token.ADD {
			return "", false
		}
		x, ok1 := literalText(e.X)
		y, ok2 := literalText(e.Y)
		return x + y, ok1 && ok2
	case *ast.ParenExpr:
		return literalText(e.X)
	}
	return "", false
}

// aceIdentifier reports the table of a pgx.Identifier{"ace", table} literal.
func aceIdentifier(c *ast.CompositeLit) (string, bool) {
	sel, ok := c.Type.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "Identifier" || len(c.Elts) != 2 {
		return "", false
	}
	schema, ok1 := literalText(c.Elts[0])
	table, ok2 := literalText(c.Elts[1])
	return table, ok1 && ok2 && schema == "ace"
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
