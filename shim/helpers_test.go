package shim_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ace-agent/ace-agent/internal/pgtls"
	"github.com/ace-agent/ace-agent/internal/testcluster"
	"github.com/ace-agent/ace-agent/shim"
	"github.com/ace-agent/ace-agent/sqlapi"
)

// shimEnv is a certificate-only 3-node cluster with agents, two submitters (alice and bob, who
// may read and write public.t) and a shim on n1 whose clients are certified by a CA of its own.
type shimEnv struct {
	*testcluster.Env
	ca         *pgtls.Authority // the shim's: server certificate and client certificates
	alice, bob string
	url        string // the shim of the default configuration
	metricsURL string
}

const tableDDL = `CREATE TABLE public.t (id int PRIMARY KEY, v text);
	INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 200) g`

func setup(t *testing.T) *shimEnv {
	t.Helper()
	e := &shimEnv{Env: testcluster.NewSecure(t)}
	e.alice, e.bob = e.AddSubmitter("alice", true), e.AddSubmitter("bob", true)
	e.ExecAll(tableDDL + fmt.Sprintf(`; GRANT SELECT, INSERT, UPDATE, DELETE ON public.t TO %s, %s`, e.alice, e.bob))
	e.DropSlotsAtEnd()
	for _, n := range e.Nodes {
		n.StartAgent(t)
	}
	var err error
	e.ca, err = pgtls.New(t.TempDir())
	require.NoError(t, err)
	e.url, e.metricsURL = e.serve(t, func(*shim.Config) {})
	return e
}

// serve starts a shim on n1 on 127.0.0.1 ports of its own, configured as edit says, until the
// test ends, and returns its API and metrics URLs.
func (e *shimEnv) serve(t *testing.T, edit func(*shim.Config)) (api, metrics string) {
	t.Helper()
	cert, key := e.ca.ServerFiles()
	cfg := shim.Config{DSN: e.Node("n1").AgentDSN, Listen: "127.0.0.1:0", CertFile: cert, KeyFile: key,
		ClientCAFile: e.ca.CAFile(), ImportTimeout: time.Minute, PollInterval: 200 * time.Millisecond}
	edit(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := shim.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln, mln) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		s.Close()
	})
	return "https://" + ln.Addr().String(), "http://" + mln.Addr().String()
}

// client is an HTTPS client presenting the certificate in certFile and keyFile.
func (e *shimEnv) client(t *testing.T, certFile, keyFile string) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	pem, err := os.ReadFile(e.ca.CAFile())
	require.NoError(t, err)
	require.True(t, roots.AppendCertsFromPEM(pem))
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		require.NoError(t, err)
		cfg.Certificates = []tls.Certificate{pair}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 2 * time.Minute}
}

// as is a client with a certificate of the shim's CA whose CN is cn.
func (e *shimEnv) as(t *testing.T, cn string) *http.Client {
	t.Helper()
	cert, key, err := e.ca.Client(cn)
	require.NoError(t, err)
	return e.client(t, cert, key)
}

// response is an answer: its status, headers and body.
type response struct {
	code   int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "body: %s", r.body)
	return m
}

// do sends a request; a body is sent as JSON.
func do(t *testing.T, c *http.Client, method, url, contentType, body string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	require.NoError(t, err)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return response{code: resp.StatusCode, header: resp.Header, body: b}
}

func post(t *testing.T, c *http.Client, url string, body any) response {
	t.Helper()
	raw, err := json.Marshal(body)
	require.NoError(t, err)
	return do(t, c, http.MethodPost, url, "application/json", string(raw))
}

// submit posts a task and returns its id, requiring a 202.
func submit(t *testing.T, c *http.Client, url string, body any) string {
	t.Helper()
	r := post(t, c, url, body)
	require.Equal(t, http.StatusAccepted, r.code, "body: %s", r.body)
	m := r.json(t)
	require.Equal(t, "QUEUED", m["status"])
	return m["task_id"].(string)
}

// waitTask polls a task-status URL until the task is terminal and returns the answer.
func waitTask(t *testing.T, c *http.Client, statusURL string) map[string]any {
	t.Helper()
	var last map[string]any
	require.Eventually(t, func() bool {
		r := do(t, c, http.MethodGet, statusURL, "", "")
		require.Equal(t, http.StatusOK, r.code, "body: %s", r.body)
		last = r.json(t)
		return sqlapi.Status(last["status"].(string)).Terminal()
	}, 2*time.Minute, 100*time.Millisecond)
	return last
}

// taskError is a failed task's error from its task-status answer.
func taskError(m map[string]any) string {
	c, _ := m["task_context"].(map[string]any)
	s, _ := c["error"].(string)
	return s
}

func compact(t *testing.T, b []byte) string {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, json.Compact(&buf, b))
	return buf.String()
}
