package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// The cluster's life over REST (issue 19): the map, the status, the health (a readiness probe),
// the leader probe, node state changes and the event log. Each reads or calls the SQL function
// of the same name on the caller's own login, as every route does: the node state changes are
// the schema owner's only, which the SQL side decides.

// clusterRoutes are the GET routes of the cluster's status.
func (s *Server) clusterRoutes(get func(string, http.HandlerFunc), post func(string, http.HandlerFunc)) {
	get("/api/v1/cluster", s.asCallerJSON(func(ctx context.Context, q sqlapi.Querier) (any, error) {
		return sqlapi.ReadClusterMap(ctx, q)
	}))
	get("/api/v1/cluster/status", s.asCallerJSON(func(ctx context.Context, q sqlapi.Querier) (any, error) {
		return sqlapi.ClusterStatus(ctx, q)
	}))
	get("/api/v1/cluster/health", s.clusterHealth)
	get("/api/v1/is-leader", s.isLeader)
	post("/api/v1/nodes/{node_name}/down", s.nodeState(func(ctx context.Context, q sqlapi.Querier, name string, r *http.Request) (sqlapi.RegisteredNode, error) {
		var body struct {
			Reason string `json:"reason"`
		}
		if err := readOptionalJSON(r, &body); err != nil {
			return sqlapi.RegisteredNode{}, err
		}
		return sqlapi.MarkNodeDown(ctx, q, name, body.Reason)
	}))
	post("/api/v1/nodes/{node_name}/up", s.nodeState(func(ctx context.Context, q sqlapi.Querier, name string, _ *http.Request) (sqlapi.RegisteredNode, error) {
		return sqlapi.MarkNodeUp(ctx, q, name)
	}))
	post("/api/v1/nodes/{node_name}/promote", s.nodeState(func(ctx context.Context, q sqlapi.Querier, name string, _ *http.Request) (sqlapi.RegisteredNode, error) {
		return sqlapi.PromoteNode(ctx, q, name)
	}))
}

// asCallerJSON answers 200 with what read returns on the caller's login.
func (s *Server) asCallerJSON(read func(context.Context, sqlapi.Querier) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var out any
		err := s.asCaller(r.Context(), callerCN(r), func(q sqlapi.Querier) (err error) {
			out, err = read(r.Context(), q)
			return err
		})
		if err != nil {
			clusterError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// clusterHealth is the readiness probe: 200 when the cluster is healthy or degraded with a
// quorum, 503 otherwise, with ace.cluster_health()'s row either way.
func (s *Server) clusterHealth(w http.ResponseWriter, r *http.Request) {
	var h sqlapi.Health
	err := s.asCaller(r.Context(), callerCN(r), func(q sqlapi.Querier) (err error) {
		h, err = sqlapi.ClusterHealth(r.Context(), q)
		return err
	})
	if err != nil {
		clusterError(w, err)
		return
	}
	code := http.StatusOK
	if !h.Serving() {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

// isLeader answers 200 on the leader's node and 409 elsewhere, for load balancers and
// schedulers that must reach the leader.
func (s *Server) isLeader(w http.ResponseWriter, r *http.Request) {
	var l sqlapi.Leadership
	err := s.asCaller(r.Context(), callerCN(r), func(q sqlapi.Querier) (err error) {
		l, err = sqlapi.Leader(r.Context(), q)
		return err
	})
	if err != nil {
		clusterError(w, err)
		return
	}
	code := http.StatusOK
	if !l.IsLeader {
		code = http.StatusConflict
	}
	writeJSON(w, code, l)
}

// nodeState answers a node state change with the node's new row.
func (s *Server) nodeState(change func(context.Context, sqlapi.Querier, string, *http.Request) (sqlapi.RegisteredNode, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var n sqlapi.RegisteredNode
		err := s.asCaller(r.Context(), callerCN(r), func(q sqlapi.Querier) (err error) {
			n, err = change(r.Context(), q, r.PathValue("node_name"), r)
			return err
		})
		if err != nil {
			clusterError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, n)
	}
}

// eventList answers GET /api/v1/events?after=ID[&kind=K...]: the events after ID the caller may
// see, oldest first (at most eventListLimit: ask again after the last one for more).
func (s *Server) eventList(w http.ResponseWriter, r *http.Request) {
	after, err := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("after must be an event id (a whole number), got %q", r.URL.Query().Get("after")))
		return
	}
	var events []sqlapi.Event
	err = s.asCaller(r.Context(), callerCN(r), func(q sqlapi.Querier) (err error) {
		events, err = sqlapi.EventsSince(r.Context(), q, after, r.URL.Query()["kind"]...)
		return err
	})
	if err != nil {
		clusterError(w, err)
		return
	}
	if events == nil {
		events = []sqlapi.Event{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": events})
}

// clusterError answers an error of the cluster routes: refused for lack of privilege 403, an
// unknown node 404, a node in the wrong state 409, the rest as every route does.
func clusterError(w http.ResponseWriter, err error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgerrcode.InsufficientPrivilege:
			writeError(w, http.StatusForbidden, err)
			return
		case pgerrcode.NoDataFound:
			writeError(w, http.StatusNotFound, err)
			return
		case pgerrcode.ObjectNotInPrerequisiteState:
			writeError(w, http.StatusConflict, err)
			return
		}
	}
	dbError(w, err)
}

// maxStateBody bounds the body of a node state change: a reason, nothing more.
const maxStateBody = 64 << 10

// readOptionalJSON reads a small JSON object body into v; an empty body leaves v as it is.
func readOptionalJSON(r *http.Request, v any) error {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxStateBody+1))
	if err != nil {
		return fmt.Errorf("read the request's body: %w", err)
	}
	if len(raw) > maxStateBody {
		return &statusError{code: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf("the body is larger than %d bytes", maxStateBody)}
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return &statusError{code: http.StatusBadRequest, msg: fmt.Sprintf("invalid JSON payload: %v", err)}
	}
	return nil
}
