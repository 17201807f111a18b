package shim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ace-agent/ace-agent/agent"
	"github.com/ace-agent/ace-agent/engine"
)

// Server is the shim: the HTTPS API and, on a listener of its own, /metrics and /healthz.
type Server struct {
	cfg       Config
	log       *slog.Logger
	verify    *verifier
	logins    *logins
	agent     *pgxpool.Pool // the agent's own login: metrics and health only, never a caller's work
	agentUser string        // the agent's login role, refused as a CN
	metrics   *metrics
	tls       *tls.Config
	hub       *hub   // the one LISTEN connection of every event stream
	streams   *slots // open event streams
	uploads   *slots // requests reading an uploaded ACE diff file
	stopHub   context.CancelFunc
}

// New checks the configuration and prepares the server; nothing listens before Serve.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.checkLimits(); err != nil {
		return nil, err
	}
	v, err := newVerifier(cfg)
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("read the server certificate: %w", err)
	}
	l, err := newLogins(cfg.DSN)
	if err != nil {
		return nil, err
	}
	poolCfg, err := engine.ParsePoolConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("ACE_DSN: %w", err)
	}
	poolCfg.MaxConns = 2
	poolCfg.ConnConfig.RuntimeParams["application_name"] = "ace-agent shim"
	pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("connect to the local node: %w", err)
	}
	s := &Server{cfg: cfg, log: log, verify: v, logins: l, agent: pool, agentUser: poolCfg.ConnConfig.User,
		streams: newSlots("event streams", cfg.MaxStreamsPerCN, "ACE_SHIM_MAX_STREAMS_PER_CN", cfg.MaxStreams, "ACE_SHIM_MAX_STREAMS"),
		uploads: newSlots("uploads of an ACE diff file", cfg.MaxUploadsPerCN, "ACE_SHIM_MAX_UPLOADS_PER_CN", 0, "")}
	s.metrics = newMetrics(pool, s.streams.count, s.uploads.count)
	s.tls = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		// A client without a certificate is refused in the handshake. One that has a
		// certificate is judged by the handler (verifier), so an expired, revoked or foreign
		// one gets a 401 with a JSON reason rather than a bare failed handshake.
		ClientAuth: tls.RequireAnyClientCert,
	}
	listenCfg := poolCfg.ConnConfig.Copy()
	listenCfg.RuntimeParams["application_name"] = "ace-agent shim events"
	s.hub = newHub(func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, listenCfg) }, log)
	hubCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stopHub = stop
	go s.hub.run(hubCtx)
	return s, nil
}

// Close stops the event streams' LISTEN connection and releases the database connections.
func (s *Server) Close() {
	s.stopHub()
	<-s.hub.done
	s.logins.close()
	s.agent.Close()
}

// Handler is the API: every route behind the client-certificate check.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range submitRoutes {
		mux.Handle(rt.path, methods(s.submit(rt), http.MethodPost))
	}
	get := func(path string, h http.HandlerFunc) { mux.Handle(path, methods(h, http.MethodGet)) }
	for _, rt := range queryRoutes {
		get(rt.path, s.submitQuery(rt))
	}
	get("/ace/task-status", s.taskStatusHandler(true))
	get("/ace/task-status/{task_id}", s.taskStatusHandler(true))
	get("/api/v1/tasks/{task_id}", s.taskStatusHandler(false))
	get("/api/v1/tasks/{task_id}/diff", s.diffHandler)
	get("/api/v1/events", s.eventsHandler)
	mux.Handle("/api/v1/schedules", methods(s.schedulesHandler, http.MethodGet, http.MethodPost))
	mux.Handle("/api/v1/repair-policies", methods(s.repairPoliciesHandler, http.MethodGet, http.MethodPost, http.MethodDelete))
	get("/healthz", s.healthz)
	s.clusterRoutes(get, func(path string, h http.HandlerFunc) { mux.Handle(path, methods(h, http.MethodPost)) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Errorf("no route %s", r.URL.Path))
	})
	return s.verify.authenticate(s.admit(mux))
}

// MetricsHandler serves /metrics and /healthz, without client certificates: bind it to a
// loopback or otherwise private address.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", methods(s.metrics.handler, http.MethodGet))
	mux.Handle("/healthz", methods(s.healthz, http.MethodGet))
	return mux
}

type health struct {
	Shim     string `json:"shim"`
	Database string `json:"database"`
	Version  string `json:"version"`
	Error    string `json:"error,omitempty"`
}

// healthz reports the shim (it answers) and the local node (the agent's login reaches the ace
// schema).
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	h := health{Shim: "ok", Database: "ok", Version: agent.Version}
	var n int64
	if err := s.agent.QueryRow(ctx, `SELECT count(*) FROM (SELECT FROM ace.tasks LIMIT 1) x`).Scan(&n); err != nil {
		h.Database, h.Error = "unavailable", err.Error()
		writeJSON(w, http.StatusServiceUnavailable, h)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

// Serve serves the API on ln (TLS is added here) and the metrics on metricsLn (nil: none) until
// ctx ends, then shuts both down gracefully.
func (s *Server) Serve(ctx context.Context, ln, metricsLn net.Listener) error {
	// No ReadTimeout or WriteTimeout: they would cut event streams. ReadHeaderTimeout also
	// bounds the TLS handshake; a body gets its own deadline where it is read (readBody).
	api := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: s.cfg.ReadHeaderTimeout, IdleTimeout: s.cfg.IdleTimeout,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	servers := []*http.Server{api}
	errs := make(chan error, 2)
	go func() { errs <- api.Serve(tls.NewListener(ln, s.tls)) }()
	if metricsLn != nil {
		m := &http.Server{Handler: s.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, m)
		go func() { errs <- m.Serve(metricsLn) }()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	for _, srv := range servers {
		// Event streams never end by themselves: closing cuts them once the grace is over.
		if e := srv.Shutdown(shutdownCtx); e != nil {
			_ = srv.Close()
		}
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// ListenAndServe listens on the configured addresses and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", s.cfg.Listen, err)
	}
	var metricsLn net.Listener
	if s.cfg.MetricsListen != "" {
		if metricsLn, err = net.Listen("tcp", s.cfg.MetricsListen); err != nil {
			_ = ln.Close()
			return fmt.Errorf("listen on %s: %w", s.cfg.MetricsListen, err)
		}
	}
	s.log.Info("shim serving", "https", ln.Addr().String(), "metrics", s.cfg.MetricsListen)
	return s.Serve(ctx, ln, metricsLn)
}
