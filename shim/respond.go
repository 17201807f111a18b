package shim

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// errorBody is ACE's error body, {"error": "…"}, with PostgreSQL's detail and hint when the
// error came from the SQL side.
type errorBody struct {
	Error  string `json:"error"`
	Detail string `json:"detail,omitempty"`
	Hint   string `json:"hint,omitempty"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers err as JSON, with code unless err is a *statusError, which has its own. An error raised by PostgreSQL is shown as PostgreSQL worded it.
func writeError(w http.ResponseWriter, code int, err error) {
	body := errorBody{Error: err.Error()}
	var st *statusError
	if errors.As(err, &st) {
		code = st.code
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		body = errorBody{Error: pgErr.Message, Detail: pgErr.Detail, Hint: pgErr.Hint}
	}
	writeJSON(w, code, body)
}

// dbError answers an error met while working as the caller: a refused login or a privileged
// role is 403, an error the SQL side raised (a validation) is 400, a refusal of the shim's own
// its status, anything else (the database is unreachable) 503.
func dbError(w http.ResponseWriter, err error) {
	var login *errLogin
	var privileged *errPrivileged
	var st *statusError
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &login):
		writeJSON(w, http.StatusForbidden, errorBody{Error: login.Error()})
	case errors.As(err, &privileged):
		writeJSON(w, http.StatusForbidden, errorBody{Error: privileged.Error()})
	case errors.As(err, &st):
		writeError(w, st.code, err)
	case errors.As(err, &pgErr):
		writeError(w, http.StatusBadRequest, err)
	default:
		writeError(w, http.StatusServiceUnavailable, err)
	}
}

// methods answers 405 with Allow for a method the route does not take.
func methods(h http.HandlerFunc, allowed ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		for _, m := range allowed {
			if r.Method == m || (m == http.MethodGet && r.Method == http.MethodHead) {
				h(w, r)
				return
			}
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, http.StatusMethodNotAllowed, errors.New("method "+r.Method+" is not allowed here; use "+strings.Join(allowed, " or ")))
	}
}

// isJSON reports whether the request says its body is JSON.
func isJSON(r *http.Request) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}
