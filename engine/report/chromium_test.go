package report

import (
	"bytes"
	"context"
	"html"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// chromiumPath is Debian's chromium package.
const chromiumPath = "/usr/bin/chromium"

// chromium runs headless Chromium on page with args added, bounded by 60 seconds, and returns
// its standard output.
func chromium(t *testing.T, page string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	home := t.TempDir()
	args = append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps", "--hide-scrollbars",
		"--user-data-dir=" + filepath.Join(home, "profile")}, args...)
	cmd := exec.CommandContext(ctx, chromiumPath, append(args, "file://"+page)...)
	// Its crash database and caches go under $HOME and $XDG_*: keep them in the test's directory.
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"))
	// Chromium starts helper processes: stop the whole group it leads, and do not wait for
	// them to close its output forever.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	require.NoError(t, ctx.Err(), "chromium did not finish in time; stderr:\n%s", stderr.String())
	require.NoError(t, err, "chromium failed; stderr:\n%s", stderr.String())
	return stdout.Bytes()
}

// TestHTMLInChromium loads a report in a real browser and checks what a person would see.
func TestHTMLInChromium(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("headless browser test skipped: %s is absent (install Debian's chromium package)", chromiumPath)
	}
	s := testSummary()
	s.DiffRowLimitReached = true
	var b bytes.Buffer
	require.NoError(t, Write(context.Background(), &b, "html", s, sliceRows(testRows(), nil)))
	page := filepath.Join(t.TempDir(), FileName(s, "html", s.EndTime))
	require.NoError(t, os.WriteFile(page, b.Bytes(), 0o600))

	// One browser at a time: two at once on a small machine take longer than one after the other.
	t.Run("dom", func(t *testing.T) {
		dom := string(chromium(t, page, "--dump-dom"))
		text := visibleText(dom)

		// The summary.
		for _, want := range []string{
			"Diff report: public.t", "5 differing rows.", "Nodes n1, n2, n3", "Primary key region, id",
			"Rows checked 15 (n1: 4, n2: 5, n3: 3)", "Time taken 1.92s", "Filter id < 1000", "Block size 100,000",
			"Stopped early yes: max_diff_rows (1,000,000) reached", "transient_diffs: 2",
			"n1/n2 4 n1/n3 3 n2/n3 3",
		} {
			require.Contains(t, text, want)
		}
		// A section per pair, each with its count.
		require.Equal(t, []string{"n1 and n2 4 rows", "n1 and n3 3 rows", "n2 and n3 3 rows"},
			submatches(text, `Differences between (\w+ and \w+ \d+ rows)`))
		require.Equal(t, []string{"Missing on n1 1", "Missing on n3 1", "Missing on n3 2"}, submatches(text, `(Missing on \w+ \d+)`))
		require.Equal(t, []string{"3", "2", "1"}, submatches(text, `Value differences (\d+)`))

		// The changed middles, exactly.
		require.Equal(t, 2, strings.Count(dom, `<td class="value-diff">alpha-<span class="diff-chunk">OLD</span>-omega</td>`))
		require.Equal(t, 2, strings.Count(dom, `<td class="value-diff">alpha-<span class="diff-chunk">NEW</span>-omega</td>`))
		// The key cells: 16 lines with a row (12 of value differences, 4 beside a missing row), two key columns.
		require.Equal(t, 32, strings.Count(dom, `<td class="key-column">`))
		require.Equal(t, 6*2, strings.Count(dom, `<th class="key-column">`), "two key headers in each of the 6 tables")
		// The MISSING marks, one per missing key per pair.
		require.Equal(t, 4, strings.Count(dom, `<td class="missing" colspan="7"><strong>MISSING</strong>`))
		require.Contains(t, text, "n3 MISSING no row with this key on n3")
		// The markup is text, not markup.
		require.NotContains(t, dom, "<b>")
		require.Equal(t, 2, strings.Count(dom, `<span class="diff-chunk">&lt;b&gt;"&amp;'</span>`))
		require.Contains(t, text, `four <b>"&'`)
		// NULL and '' look different.
		require.Equal(t, 2, strings.Count(dom, `<td class="value-diff"><span class="null">NULL</span></td>`))
		require.Equal(t, 2, strings.Count(dom, `<td class="value-diff"><span class="empty">""</span></td>`))
	})

	t.Run("screenshot", func(t *testing.T) {
		shot := filepath.Join(t.TempDir(), "report.png")
		chromium(t, page, "--screenshot="+shot, "--window-size=1280,2000")
		f, err := os.Open(shot)
		require.NoError(t, err)
		defer f.Close()
		img, err := png.Decode(f)
		require.NoError(t, err)
		require.Equal(t, 1280, img.Bounds().Dx())
		require.Equal(t, 2000, img.Bounds().Dy())

		counts := map[string]int{}
		colours := map[string][3]int{}
		for _, class := range []string{"td.value-diff", ".diff-chunk", "td.missing", "td.key-column"} {
			colours[class] = cssBackground(t, class)
		}
		bounds := img.Bounds()
		for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
			for x := bounds.Min.X; x < bounds.Max.X; x++ {
				r, g, b, _ := img.At(x, y).RGBA()
				for class, c := range colours {
					if near(int(r>>8), c[0]) && near(int(g>>8), c[1]) && near(int(b>>8), c[2]) {
						counts[class]++
					}
				}
			}
		}
		t.Logf("pixels per background: %v", counts)
		// Ten value-diff cells and six chunks of a few characters; four MISSING bars ~580 px wide.
		require.Greater(t, counts["td.value-diff"], 3000)
		require.Greater(t, counts[".diff-chunk"], 500)
		require.Greater(t, counts["td.missing"], 4*400*15)
		require.Greater(t, counts["td.key-column"], 3000)
	})
}

func near(a, b int) bool { return a-b <= 3 && b-a <= 3 }

// cssBackground reads the background colour of a rule of the report's style sheet.
func cssBackground(t *testing.T, selector string) [3]int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(selector) + ` \{[^}]*background: #([0-9a-f]{6});`).FindStringSubmatch(htmlCSS)
	require.NotNil(t, m, "no background for %s", selector)
	var c [3]int
	for i := range c {
		v, err := strconv.ParseUint(m[1][2*i:2*i+2], 16, 8)
		require.NoError(t, err)
		c[i] = int(v)
	}
	return c
}

// visibleText is the text of a page's body as a person reads it: no tags (nor the style
// sheet), entities decoded, white space collapsed.
func visibleText(dom string) string {
	if i := strings.Index(dom, "<body"); i >= 0 {
		dom = dom[i:]
	}
	dom = regexp.MustCompile(`<[^>]*>`).ReplaceAllString(dom, " ")
	return strings.Join(strings.Fields(html.UnescapeString(dom)), " ")
}
