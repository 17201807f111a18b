package repocheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// sqlstateLiteral is a string that reads as a SQLSTATE: one of PostgreSQL's error classes, then
// three digits or capitals.
var sqlstateLiteral = regexp.MustCompile(`^(0[0-9ABFLPZ]|2[0-9BDF]|3[489BDF]|4[024]|5[3-8]|72|F0|HV|P0|XX)[0-9A-Z]{3}$`)

// TestSQLStatesAreNamed: SQLSTATEs are named through github.com/jackc/pgerrcode, in tests too: "42501" says nothing
// to a reader that pgerrcode.InsufficientPrivilege does not say better.
func TestSQLStatesAreNamed(t *testing.T) {
	t.Parallel()
	root := moduleRoot(t)
	var found []string
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
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		f, err := parser.ParseFile(fset, filepath.ToSlash(rel), src, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		found = append(found, sqlstateLiterals(fset, f)...)
		return nil
	})
	require.NoError(t, err)
	require.Empty(t, found, "name these SQLSTATEs with pgerrcode's constants")
}

func sqlstateLiterals(fset *token.FileSet, f *ast.File) []string {
	var out []string
	ast.Inspect(f, func(n ast.Node) bool {
		lit, ok := n.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return true
		}
		if s, err := strconv.Unquote(lit.Value); err == nil && sqlstateLiteral.MatchString(s) {
			out = append(out, fset.Position(lit.Pos()).String()+": "+lit.Value)
		}
		return true
	})
	return out
}

func TestSQLStateScanner(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "x.go", `package x
var a = "42501"
var b = "QUERY"
var c = "4250"
var d = "55P03"
var e = "128MB"`, 0)
	require.NoError(t, err)
	require.Equal(t, []string{`x.go:2:9: "42501"`, `x.go:5:9: "55P03"`}, sqlstateLiterals(fset, f))
}
