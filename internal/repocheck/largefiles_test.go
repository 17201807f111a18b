package repocheck

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// maxTrackedFileBytes is the size above which a tracked file must be listed as a fixture.
const maxTrackedFileBytes = 1 << 20

// allowListPath is the allow-list of large fixtures, relative to the repository root.
const allowListPath = "testdata/large-files.txt"

func TestNoLargeTrackedFiles(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	allowed, err := readAllowList(filepath.Join(root, allowListPath))
	require.NoError(t, err)
	files := trackedFiles(t, root)
	sizes, err := fileSizes(root, files)
	require.NoError(t, err)
	require.Empty(t, tooLarge(sizes, allowed),
		"tracked files larger than %d bytes: remove them from git (build output belongs in .gitignore) "+
			"or, for a fixture that must be tracked, add a line `path  reason` to %s", maxTrackedFileBytes, allowListPath)
	require.Empty(t, staleEntries(sizes, allowed),
		"%s lists files that are no longer tracked or no longer large: remove those lines", allowListPath)
}

func TestAllowListParsing(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		text    string
		want    map[string]string
		wantErr string
	}{
		{name: "empty", text: "", want: map[string]string{}},
		{name: "comments and blanks", text: "# header\n\n  \n", want: map[string]string{}},
		{name: "entry", text: "testdata/big.bin   a dump ACE 2.1.1 wrote\n",
			want: map[string]string{"testdata/big.bin": "a dump ACE 2.1.1 wrote"}},
		{name: "no reason", text: "testdata/big.bin\n", wantErr: "line 1"},
		{name: "twice", text: "a x\na y\n", wantErr: "line 2"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseAllowList(strings.NewReader(c.text))
			if c.wantErr != "" {
				require.ErrorContains(t, err, c.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	sizes := map[string]int64{"bench": 17 << 20, "small.go": 100, "testdata/big.bin": 2 << 20,
		"edge": maxTrackedFileBytes}
	allowed := map[string]string{"testdata/big.bin": "a fixture", "gone.bin": "removed since"}
	require.Equal(t, []string{"bench (17825792 bytes)"}, tooLarge(sizes, allowed))
	require.Equal(t, []string{"gone.bin"}, staleEntries(sizes, allowed))
}

// repoRoot is the top of the git checkout this package sits in; the test is skipped, saying why,
// only when there is no git or no checkout (CI always runs on one).
func repoRoot(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed: the large-file check needs `git ls-files`")
	}
	out, err := exec.CommandContext(context.Background(), "git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not a git checkout (no .git directory), so there are no tracked files to check: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// trackedFiles lists the files git tracks, relative to root.
func trackedFiles(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), "git", "ls-files", "-z")
	cmd.Dir = root
	out, err := cmd.Output()
	require.NoError(t, err, "listing tracked files with git ls-files in %s", root)
	var files []string
	for _, f := range bytes.Split(out, []byte{0}) {
		if len(f) > 0 {
			files = append(files, string(f))
		}
	}
	return files
}

// fileSizes stats every tracked file; one deleted in the working tree but still tracked is skipped.
func fileSizes(root string, files []string) (map[string]int64, error) {
	sizes := make(map[string]int64, len(files))
	for _, f := range files {
		info, err := os.Lstat(filepath.Join(root, f))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading the size of tracked file %s: %w", f, err)
		}
		sizes[f] = info.Size()
	}
	return sizes, nil
}

// tooLarge names the files above the limit that the allow-list does not list, in path order.
func tooLarge(sizes map[string]int64, allowed map[string]string) []string {
	var out []string
	for f, size := range sizes {
		if _, ok := allowed[f]; size > maxTrackedFileBytes && !ok {
			out = append(out, fmt.Sprintf("%s (%d bytes)", f, size))
		}
	}
	sort.Strings(out)
	return out
}

// staleEntries names allow-list entries for files that are no longer tracked or no longer large,
// so the list does not keep permissions nobody needs.
func staleEntries(sizes map[string]int64, allowed map[string]string) []string {
	var out []string
	for f := range allowed {
		if sizes[f] <= maxTrackedFileBytes {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

func readAllowList(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening the large-file allow-list (create it, even empty): %w", err)
	}
	defer f.Close()
	allowed, err := parseAllowList(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return allowed, nil
}

// parseAllowList reads `path  reason` lines; blank lines and lines starting with # are ignored.
func parseAllowList(r io.Reader) (map[string]string, error) {
	allowed := map[string]string{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		path, reason := fields[0], strings.Join(fields[1:], " ")
		if reason == "" {
			return nil, fmt.Errorf("line %d: %q names no reason: write `path  reason`", n, line)
		}
		if _, dup := allowed[path]; dup {
			return nil, fmt.Errorf("line %d: %s is listed twice", n, path)
		}
		allowed[path] = reason
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading the allow-list: %w", err)
	}
	return allowed, nil
}
