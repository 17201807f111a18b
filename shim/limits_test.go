package shim_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/shim"
)

// rawConn is a TLS connection to the shim at url presenting the certificate of cn, for requests
// that the http package would not send: bodies that stall, trickle or never come.
func (e *shimEnv) rawConn(t *testing.T, url, cn string) *tls.Conn {
	t.Helper()
	certFile, keyFile, err := e.ca.Client(cn)
	require.NoError(t, err)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	pemCA, err := os.ReadFile(e.ca.CAFile())
	require.NoError(t, err)
	require.True(t, roots.AppendCertsFromPEM(pemCA))
	conn, err := tls.Dial("tcp", strings.TrimPrefix(url, "https://"), &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// sendHead writes a POST's request line and headers, announcing a JSON body of length bytes,
// and then as much of the body as is given.
func sendHead(t *testing.T, conn *tls.Conn, path string, length int64, body string) {
	t.Helper()
	_, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: shim\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, length, body)
	require.NoError(t, err)
}

// readAnswer reads the shim's answer on conn, failing if none comes within wait.
func readAnswer(t *testing.T, conn *tls.Conn, wait time.Duration) response {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(wait)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, "no answer within %s", wait)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{code: resp.StatusCode, header: resp.Header, body: b}
}

const unknownTask = "/api/v1/tasks/00000000-0000-4000-8000-000000000000"

// One CN cannot hold more event streams than its cap, which refuses it with 429 and a reason,
// while another CN still gets its stream and its events; the streams hold no database
// connection of their own, so the shim's connections stay few however many are open.
func TestEventStreamsAreCapped(t *testing.T) {
	t.Parallel()
	e := setup(t)
	url, metrics := e.serve(t, func(c *shim.Config) { c.MaxStreamsPerCN = 3; c.MaxStreams = 10 })
	alice, bob := e.as(t, e.alice), e.as(t, e.bob)
	for range 3 {
		openEvents(t, alice, url)
	}
	for range 5 {
		r := do(t, alice, http.MethodGet, url+"/api/v1/events", "", "")
		require.Equal(t, http.StatusTooManyRequests, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t)["error"], "already has 3 event streams open")
		require.Contains(t, r.json(t)["error"], "ACE_SHIM_MAX_STREAMS_PER_CN")
	}
	bobEvents := openEvents(t, bob, url)
	require.Equal(t, 4.0, metric(t, metrics, "ace_shim_event_streams"))
	task := submit(t, bob, url+"/api/v1/table-diff", map[string]any{"table": "public.t"})
	require.Equal(t, "done", last(names(bobEvents.until(t, task), task)))

	// Each shim of the test holds one LISTEN connection, and each caller's pool at most 4; the
	// 4 streams would have held 4 connections of their own.
	var conns int
	require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND application_name LIKE 'ace-agent shim%'`).Scan(&conns))
	require.LessOrEqual(t, conns, 2+2+4+4, "the shims' connections")

	t.Run("the cap over all CNs", func(t *testing.T) {
		url, _ := e.serve(t, func(c *shim.Config) { c.MaxStreams = 1 })
		openEvents(t, alice, url)
		r := do(t, bob, http.MethodGet, url+"/api/v1/events", "", "")
		require.Equal(t, http.StatusTooManyRequests, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t)["error"], "ACE_SHIM_MAX_STREAMS")
	})
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

// Anyone may NOTIFY ace_task: a flood of them wakes a stream at most once per minimum interval,
// and the notification carries nothing the stream uses.
func TestEventStreamRereadsAreRateLimited(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const minInterval, flood = 500 * time.Millisecond, 3 * time.Second
	url, metrics := e.serve(t, func(c *shim.Config) { c.EventMinInterval = minInterval; c.PollInterval = time.Hour })
	openEvents(t, e.as(t, e.bob), url)
	require.Eventually(t, func() bool { return metric(t, metrics, "ace_shim_event_rereads_total") >= 1 }, time.Minute, 50*time.Millisecond)
	time.Sleep(minInterval) // the LISTEN is in place
	before := metric(t, metrics, "ace_shim_event_rereads_total")

	alice := e.Node("n1").ConnectAs(t, e.alice)
	// A flood of at least 200 notifications lasting at least flood: on a loaded machine it lasts
	// longer, and the bound on re-reads follows the time it took.
	sent, start := 0, time.Now()
	for ; sent < 200 || time.Since(start) < flood; sent++ {
		_, err := alice.Exec(context.Background(), `NOTIFY ace_task, 'forged'`)
		require.NoError(t, err)
	}
	time.Sleep(2 * minInterval)
	elapsed := time.Since(start)
	rereads := metric(t, metrics, "ace_shim_event_rereads_total") - before
	t.Logf("%d notifications in %v, %v re-reads", sent, elapsed, rereads)
	require.GreaterOrEqual(t, rereads, 2.0, "the notifications wake the stream")
	require.LessOrEqual(t, rereads, float64(elapsed/minInterval)+3, "at most one re-read per %s", minInterval)
}

// A certificate whose subject has two CNs names one role to Go (the last) and another to
// PostgreSQL (the first): the shim refuses it.
func TestTwoCommonNamesAreRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	cert, key := twoCNCertificate(t, e.ca.Dir, e.bob, e.alice)
	r := do(t, e.client(t, cert, key), http.MethodGet, e.url+unknownTask, "", "")
	require.Equal(t, http.StatusUnauthorized, r.code, "body: %s", r.body)
	require.Contains(t, r.json(t)["error"], "has 2 common names (CN)")
}

// twoCNCertificate issues, with the CA in dir (pgtls' files), a client certificate whose
// subject holds the CN first and then the CN second.
func twoCNCertificate(t *testing.T, dir, first, second string) (cert, key string) {
	t.Helper()
	caCert, caKey := readCA(t, dir)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	cn := asn1.ObjectIdentifier{2, 5, 4, 3}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: cn, Value: first}, {Type: cn, Value: second}}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
	require.NoError(t, err)
	parsed, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	require.Equal(t, second, parsed.Subject.CommonName, "Go reads the last CN")
	keyDER, err := x509.MarshalECPrivateKey(k)
	require.NoError(t, err)
	cert, key = filepath.Join(t.TempDir(), "two.crt"), filepath.Join(t.TempDir(), "two.key")
	require.NoError(t, os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return cert, key
}

func readCA(t *testing.T, dir string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		block, _ := pem.Decode(b)
		require.NotNil(t, block, name)
		return block.Bytes
	}
	cert, err := x509.ParseCertificate(read("ca.crt"))
	require.NoError(t, err)
	key, err := x509.ParseECPrivateKey(read("ca.key"))
	require.NoError(t, err)
	return cert, key
}

// Roles that row-level security does not limit are refused as CNs with 403: through the shim
// they would read every user's tasks and diff rows.
func TestPrivilegedRolesAreRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	super, bypass, member := e.AddSubmitter("root", true), e.AddSubmitter("bypass", true), e.AddSubmitter("ownermember", true)
	e.ExecAll(fmt.Sprintf(`ALTER ROLE %s SUPERUSER; ALTER ROLE %s BYPASSRLS; GRANT %s TO %s`, super, bypass, testcluster.AgentRole, member))
	cases := []struct{ name, cn, reason string }{
		{"the agent's own login", testcluster.AgentRole, "is the agent's own login"},
		{"a superuser", super, "is a superuser"},
		{"a role with BYPASSRLS", bypass, "has BYPASSRLS"},
		{"a member of the ace schema's owner", member, "owns the ace schema (its owner is " + testcluster.AgentRole + ")"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := do(t, e.as(t, c.cn), http.MethodGet, e.url+unknownTask, "", "")
			require.Equal(t, http.StatusForbidden, r.code, "body: %s", r.body)
			require.Contains(t, r.json(t)["error"], c.reason)
			r = do(t, e.as(t, c.cn), http.MethodGet, e.url+"/api/v1/events", "", "")
			require.Equal(t, http.StatusForbidden, r.code, "body: %s", r.body)
		})
	}
	t.Run("an ordinary submitter", func(t *testing.T) {
		t.Parallel()
		r := do(t, e.as(t, e.alice), http.MethodGet, e.url+unknownTask, "", "")
		require.Equal(t, http.StatusNotFound, r.code, "body: %s", r.body)
	})
}

// Bodies are read only from callers who may log in, up to a small cap, except the upload of an
// ACE diff file, of which a CN may send only a few at once; and they must arrive in time.
func TestRequestBodies(t *testing.T) {
	t.Parallel()
	e := setup(t)
	url, metrics := e.serve(t, func(c *shim.Config) {
		c.MaxUploadBytes, c.MaxUploadsPerCN, c.BodyTimeout = 3<<20, 2, time.Minute
	})
	big := func(n int) string {
		return `{"table": "public.t", "table_filter": "` + strings.Repeat(" ", n) + `id > 0"}`
	}

	t.Run("an oversized JSON body", func(t *testing.T) {
		t.Parallel()
		r := post(t, e.as(t, e.alice), url+"/api/v1/table-diff", map[string]any{"table": "public.t", "table_filter": strings.Repeat(" ", 2<<20) + "id > 0"})
		require.Equal(t, http.StatusRequestEntityTooLarge, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t)["error"], "larger than 1048576 bytes (ACE_SHIM_MAX_BODY_BYTES)")
	})
	t.Run("an oversized JSON body without a length", func(t *testing.T) {
		t.Parallel()
		conn := e.rawConn(t, url, e.alice)
		body := big(2 << 20)
		go func() {
			_, _ = fmt.Fprintf(conn, "POST /api/v1/table-diff HTTP/1.1\r\nHost: shim\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(body), body)
		}()
		r := readAnswer(t, conn, 30*time.Second)
		require.Equal(t, http.StatusRequestEntityTooLarge, r.code, "body: %s", r.body)
	})
	t.Run("an upload over its cap", func(t *testing.T) {
		t.Parallel()
		conn := e.rawConn(t, url, e.alice)
		sendHead(t, conn, "/api/v1/table-repair", 4<<20, "")
		r := readAnswer(t, conn, 30*time.Second)
		require.Equal(t, http.StatusRequestEntityTooLarge, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t)["error"], "ACE_SHIM_MAX_UPLOAD_BYTES")
	})
	t.Run("the body of a CN that cannot log in is not read", func(t *testing.T) {
		t.Parallel()
		// 100 MiB announced and none sent: an answer can only come before the body is read.
		conn := e.rawConn(t, url, e.DB+"_nobody")
		sendHead(t, conn, "/api/v1/table-repair", 100<<20, `{"table": `)
		r := readAnswer(t, conn, 30*time.Second)
		require.Equal(t, http.StatusForbidden, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t)["error"], "cannot log in to the database as "+e.DB+"_nobody")
	})
	t.Run("a body that trickles is cut off", func(t *testing.T) {
		t.Parallel()
		url, _ := e.serve(t, func(c *shim.Config) { c.BodyTimeout = time.Second })
		conn := e.rawConn(t, url, e.alice)
		sendHead(t, conn, "/api/v1/table-diff", 100, `{"table": `)
		r := readAnswer(t, conn, 30*time.Second)
		require.Equal(t, http.StatusRequestTimeout, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t)["error"], "ACE_SHIM_BODY_TIMEOUT")
	})
	t.Run("uploads per CN", func(t *testing.T) {
		t.Parallel()
		// Two uploads of alice's stall past the JSON cap, so each holds an upload slot.
		for range 2 {
			sendHead(t, e.rawConn(t, url, e.alice), "/api/v1/table-repair", 2<<20, big(1<<20+10))
		}
		require.Eventually(t, func() bool { return metric(t, metrics, "ace_shim_uploads") == 2 }, time.Minute, 50*time.Millisecond)
		conn := e.rawConn(t, url, e.alice)
		sendHead(t, conn, "/api/v1/table-repair", 2<<20, big(1<<20+10))
		r := readAnswer(t, conn, 30*time.Second)
		require.Equal(t, http.StatusTooManyRequests, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t)["error"], "ACE_SHIM_MAX_UPLOADS_PER_CN")

		// Bob's upload is read: its fields are judged, not refused for alice's.
		r = post(t, e.as(t, e.bob), url+"/api/v1/table-repair", map[string]any{"table": "public.t", "tabel": strings.Repeat(" ", 2<<20)})
		require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
		require.Contains(t, r.json(t)["error"], `unknown field "tabel"`)
	})
}

// A client without a certificate is refused in the TLS handshake.
func TestHandshakeRequiresACertificate(t *testing.T) {
	t.Parallel()
	e := setup(t)
	resp, err := e.client(t, "", "").Get(e.url + unknownTask)
	if err == nil {
		resp.Body.Close()
	}
	require.Error(t, err, "a request without a client certificate got an answer")
	require.Contains(t, err.Error(), "certificate required")
}

// A key twice in one object is refused at any depth, naming the key: encoding/json would keep
// the last, so "dry_run": true, "dry_run": false would be a real repair.
func TestDuplicateKeysAreRefused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	alice := e.as(t, e.alice)
	e.Node("n2").Exec(t, `UPDATE public.t SET v = 'drift' WHERE id = 7`)
	diff := submit(t, alice, e.url+"/api/v1/table-diff", map[string]any{"table": "public.t"})
	require.Equal(t, "COMPLETED", waitTask(t, alice, e.url+"/api/v1/tasks/"+diff)["status"])

	cases := []struct{ name, path, body, key string }{
		{"dry_run twice", "/api/v1/table-repair", `{"table": "public.t", "diff_file": "` + diff + `", "source_of_truth": "n1", "dry_run": true, "dry_run": false}`, `duplicate key "dry_run" in the request body (in $)`},
		{"seed route", "/ace/table-repair", `{"table_name": "public.t", "diff_file": "` + diff + `", "source_of_truth": "n1", "dry_run": true, "dry_run": false}`, `duplicate key "dry_run"`},
		{"nested", "/api/v1/table-repair", `{"table": "public.t", "source_of_truth": "n1", "dry_run": true, "diff_file": {"diffs": {}, "diffs": {}}}`, `duplicate key "diffs" in the request body (in $.diff_file)`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := do(t, alice, http.MethodPost, e.url+c.path, "application/json", c.body)
			require.Equal(t, http.StatusBadRequest, r.code, "body: %s", r.body)
			require.Contains(t, r.json(t)["error"], c.key)
		})
	}
	var repairs int
	require.NoError(t, e.Node("n1").Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM ace.tasks WHERE task_type IN ('table-repair', 'diff-import')`).Scan(&repairs))
	require.Zero(t, repairs, "a refused body inserted a task")
}
