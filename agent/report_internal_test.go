package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// Issue 16, item 18: a report was created with O_TRUNC, so a report of the same name (or any
// file there) was overwritten. An existing file is now left alone.
func TestReportFileNeverTruncatesAFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "public_t_diffs-20250722120351.json")
	require.NoError(t, os.WriteFile(path, []byte("another task's report"), 0o600))
	_, err := createReportFile(path)
	require.ErrorContains(t, err, "a file of that name exists already; it was left alone")
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "another task's report", string(raw))

	fresh := filepath.Join(filepath.Dir(path), "new.json")
	f, err := createReportFile(fresh)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	info, err := os.Stat(fresh)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}
