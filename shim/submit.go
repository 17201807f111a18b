package shim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// requestError is a request the shim cannot map at all (not JSON, a field it does not know);
// everything it can map is judged by the SQL side.
type requestError struct{ msg string }

func (e *requestError) Error() string { return e.msg }

// args maps a request body onto the task's args. upload is an uploaded ACE diff file (the
// diff_file field holding a JSON object), which must be imported before the task is inserted.
func (rt submitRoute) args(body map[string]json.RawMessage) (args map[string]json.RawMessage, upload json.RawMessage, err error) {
	args = map[string]json.RawMessage{}
	for _, name := range slices.Sorted(maps.Keys(body)) {
		v := body[name]
		f, ok := rt.field(name)
		switch {
		case !ok:
			return nil, nil, &requestError{fmt.Sprintf("unknown field %q for %s (known: %s)", name, rt.path, rt.fieldNames())}
		case f.unsupported && !isZero(v):
			return nil, nil, &requestError{fmt.Sprintf("field %q is not supported by ace-agent", name)}
		case f.nested:
			if err := nestedArgs(args, name, v); err != nil {
				return nil, nil, err
			}
			continue
		case f.arg == "":
			continue
		case f.rest == diffFileField.rest && f.arg == diffFileField.arg && bytes.HasPrefix(bytes.TrimSpace(v), []byte("{")):
			upload = v
			continue
		}
		if f.conv != nil {
			if v, ok = f.conv(v); !ok {
				continue
			}
		}
		key := f.arg
		if f.objectArg != "" && bytes.HasPrefix(bytes.TrimSpace(v), []byte("{")) {
			key = f.objectArg
		}
		if _, dup := args[key]; dup {
			return nil, nil, &requestError{fmt.Sprintf("%q is given twice (field %q and another)", key, name)}
		}
		args[key] = v
	}
	return args, upload, nil
}

// nestedArgs adds the members of the object v (the field name) to args, refusing one that
// would replace an argument given at the top.
func nestedArgs(args map[string]json.RawMessage, name string, v json.RawMessage) error {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(v, &members); err != nil {
		return &requestError{fmt.Sprintf("field %q must be a JSON object: %v", name, err)}
	}
	for k, mv := range members {
		if _, dup := args[k]; dup {
			return &requestError{fmt.Sprintf("%q is given twice, at the top and in %q", k, name)}
		}
		args[k] = mv
	}
	return nil
}

// takesUpload reports a route whose diff_file may be an uploaded ACE diff file.
func (rt submitRoute) takesUpload() bool {
	_, ok := rt.field(diffFileField.rest)
	return ok
}

func (rt submitRoute) field(name string) (field, bool) {
	i := slices.IndexFunc(rt.fields, func(f field) bool { return f.rest == name })
	if i < 0 {
		return field{}, false
	}
	return rt.fields[i], true
}

func (rt submitRoute) fieldNames() string {
	names := make([]string, len(rt.fields))
	for i, f := range rt.fields {
		names[i] = f.rest
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// readBody reads a JSON object body of at most ACE_SHIM_MAX_BODY_BYTES, or, on a route that
// takes an uploaded ACE diff file, of at most ACE_SHIM_MAX_UPLOAD_BYTES while holding one of the
// CN's upload slots (release gives it back; nil when none is held). The body must arrive
// within ACE_SHIM_BODY_TIMEOUT and have no key twice in an object.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, uploads bool) (body map[string]json.RawMessage, release func(), err error) {
	limit, setting := s.cfg.MaxBodyBytes, "ACE_SHIM_MAX_BODY_BYTES"
	if uploads {
		limit, setting = s.cfg.MaxUploadBytes, "ACE_SHIM_MAX_UPLOAD_BYTES"
	}
	if r.ContentLength > limit {
		return nil, nil, tooLarge(limit, setting)
	}
	rc := http.NewResponseController(w)
	if err := rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)); err != nil {
		return nil, nil, fmt.Errorf("set the body's read deadline: %w", err)
	}
	raw, err := readUpTo(r.Body, s.cfg.MaxBodyBytes)
	if err == nil && int64(len(raw)) > s.cfg.MaxBodyBytes {
		if !uploads {
			return nil, nil, tooLarge(s.cfg.MaxBodyBytes, "ACE_SHIM_MAX_BODY_BYTES")
		}
		if release, err = s.uploads.take(callerCN(r)); err != nil {
			return nil, nil, err
		}
		var rest []byte
		rest, err = readUpTo(r.Body, limit-int64(len(raw)))
		if raw = append(raw, rest...); err == nil && int64(len(raw)) > limit {
			err = tooLarge(limit, setting)
		}
	}
	if err == nil {
		err = duplicateKey(raw)
	}
	if err == nil {
		if e := json.Unmarshal(raw, &body); e != nil || body == nil {
			err = &requestError{fmt.Sprintf("invalid JSON payload: the body must be a JSON object (%v)", e)}
		}
	}
	if err != nil {
		if release != nil {
			release()
		}
		return nil, nil, err
	}
	// Cleared once read: a deadline that passes while the request is served would end it.
	if err := rc.SetReadDeadline(time.Time{}); err != nil {
		return nil, nil, fmt.Errorf("clear the body's read deadline: %w", err)
	}
	return body, release, nil
}

// stopReading makes the server read nothing more of a refused request's body (it would read
// what is left to keep the connection) and close the connection after the answer.
func stopReading(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// readUpTo reads up to max+1 bytes of r, so a longer body shows as one byte too many.
func readUpTo(r io.Reader, max int64) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, max+1))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, &statusError{http.StatusRequestTimeout, "the request body did not arrive in time (ACE_SHIM_BODY_TIMEOUT): send it whole, without pauses"}
	case err != nil:
		return nil, &requestError{fmt.Sprintf("read the request body: %v", err)}
	}
	return raw, nil
}

func tooLarge(limit int64, setting string) error {
	msg := fmt.Sprintf("the request body is larger than %d bytes (%s)", limit, setting)
	if setting == "ACE_SHIM_MAX_BODY_BYTES" {
		msg += "; only a repair or rerun that uploads an ACE diff file in diff_file may be larger (ACE_SHIM_MAX_UPLOAD_BYTES)"
	}
	return &statusError{http.StatusRequestEntityTooLarge, msg}
}

// submitted is the answer to a submission, ACE's.
type submitted struct {
	TaskID uuid.UUID     `json:"task_id"`
	Status sqlapi.Status `json:"status"`
}

// submit handles one POST route: the body becomes the task's args, inserted as the caller.
func (s *Server) submit(rt submitRoute) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !isJSON(r) {
			stopReading(w)
			writeError(w, http.StatusUnsupportedMediaType, fmt.Errorf("the body must be JSON (Content-Type: application/json), got %q", r.Header.Get("Content-Type")))
			return
		}
		body, release, err := s.readBody(w, r, rt.takesUpload())
		if err != nil {
			stopReading(w)
			writeError(w, http.StatusBadRequest, err)
			return
		}
		s.submitFields(w, r, rt, body, release)
	}
}

// submitQuery serves a route whose fields are URL query parameters, as the GET routes of ACE's
// Python API take them. A value that is JSON (true, 100, ["n1"]) is read as such, any other as
// text; the fields then map onto the task's args as a body's do.
func (s *Server) submitQuery(rt submitRoute) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body := map[string]json.RawMessage{}
		for name, values := range r.URL.Query() {
			v := values[len(values)-1]
			raw := json.RawMessage(v)
			if !json.Valid(raw) || bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
				raw, _ = json.Marshal(v)
			}
			body[name] = raw
		}
		s.submitFields(w, r, rt, body, nil)
	}
}

// submitFields maps a request's fields onto the task's args and inserts the task.
func (s *Server) submitFields(w http.ResponseWriter, r *http.Request, rt submitRoute, body map[string]json.RawMessage, release func()) {
	args, upload, err := rt.args(body)
	if err == nil && upload != nil && release == nil {
		// A small upload takes a slot too: its import holds a connection until it ends.
		release, err = s.uploads.take(callerCN(r))
	}
	if release != nil {
		defer release()
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	s.insertAndAnswer(w, r, rt, args, upload)
}

// insertAndAnswer inserts the task on the caller's login and answers 202 with its id, or, on a
// waited route, once the task has ended.
func (s *Server) insertAndAnswer(w http.ResponseWriter, r *http.Request, rt submitRoute, args map[string]json.RawMessage, upload json.RawMessage) {
	id, err := s.insert(r.Context(), callerCN(r), rt.taskType, args, upload)
	if err != nil {
		var reqErr *requestError
		if errors.As(err, &reqErr) {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		dbError(w, err)
		return
	}
	if msg, ok := waitedRoutes[rt.path]; ok {
		s.answerWhenEnded(w, r, id, msg)
		return
	}
	writeJSON(w, http.StatusAccepted, submitted{TaskID: id, Status: sqlapi.StatusQueued})
}

// message is the answer of a waited route, the seed's.
type message struct {
	Message string    `json:"message"`
	TaskID  uuid.UUID `json:"task_id"`
}

// answerWhenEnded waits for the task on the caller's login and answers 200 with msg once it
// completed, or 400 with the reason it did not.
func (s *Server) answerWhenEnded(w http.ResponseWriter, r *http.Request, id uuid.UUID, msg string) {
	conn, err := s.logins.acquire(r.Context(), callerCN(r))
	if err != nil {
		dbError(w, err)
		return
	}
	defer conn.Release()
	task, err := sqlapi.Wait(r.Context(), conn.Conn(), id, s.cfg.PollInterval, nil)
	if err != nil {
		dbError(w, fmt.Errorf("wait for task %s: %w", id, err))
		return
	}
	if task.Status != sqlapi.StatusCompleted {
		reason := "no reason recorded"
		if task.Error != nil {
			reason = *task.Error
		}
		writeError(w, http.StatusBadRequest, fmt.Errorf("task %s %s: %s", id, task.Status, reason))
		return
	}
	writeJSON(w, http.StatusOK, message{Message: msg, TaskID: id})
}

// insert inserts the task on the caller's own login, importing an uploaded diff file first.
func (s *Server) insert(ctx context.Context, role string, typ sqlapi.TaskType, args map[string]json.RawMessage, upload json.RawMessage) (uuid.UUID, error) {
	conn, err := s.logins.acquire(ctx, role)
	if err != nil {
		return uuid.Nil, err
	}
	defer conn.Release()
	if upload != nil {
		diff, err := s.importDiff(ctx, conn.Conn(), upload)
		if err != nil {
			return uuid.Nil, err
		}
		args["diff_task"], _ = json.Marshal(diff)
	}
	id, err := sqlapi.Submit(ctx, conn, typ, args)
	s.metrics.submitted(typ, err)
	return id, err
}

// importDiff imports an uploaded ACE diff file as a diff-import task, as ace.diff_import does,
// and waits for it: a repair or rerun can refer only to a diff that completed.
func (s *Server) importDiff(ctx context.Context, conn *pgx.Conn, diff json.RawMessage) (uuid.UUID, error) {
	id, err := sqlapi.Submit(ctx, conn, sqlapi.TypeDiffImport, sqlapi.DiffImportArgs{Diff: diff, FileName: "uploaded diff_file"})
	if err != nil {
		return uuid.Nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ImportTimeout)
	defer cancel()
	task, err := sqlapi.Wait(ctx, conn, id, s.cfg.PollInterval, nil)
	if err != nil {
		return uuid.Nil, fmt.Errorf("wait for the import of the uploaded diff file (task %s): %w", id, err)
	}
	if task.Status != sqlapi.StatusCompleted {
		reason := "no reason recorded"
		if task.Error != nil {
			reason = *task.Error
		}
		return uuid.Nil, &requestError{fmt.Sprintf("the uploaded diff file was not imported (task %s %s): %s", id, task.Status, reason)}
	}
	return id, nil
}
