package shim

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/ace-agent/ace-agent/sqlapi"
)

// maxPolicyBody bounds a POST /api/v1/repair-policies body: a policy's definition, not a file.
const maxPolicyBody = 1 << 20

// repairPoliciesHandler answers GET /api/v1/repair-policies with the caller's policies and how
// their last run ended (ace.repair_policy_status, which shows a role its own), POST with
// ace.repair_policy run as the caller (the fields are its argument names, sqlapi.RepairPolicySpec,
// and the SQL side validates them), and DELETE ?policy_name= with ace.drop_repair_policy. A run is
// a task: POST /api/v1/repair-policies/run {"policy_name": ...}.
func (s *Server) repairPoliciesHandler(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodPost:
		s.addRepairPolicy(w, r)
		return
	case http.MethodDelete:
		s.dropRepairPolicy(w, r)
		return
	}
	var all []sqlapi.RepairPolicy
	err := s.asCaller(r.Context(), callerCN(r), func(q sqlapi.Querier) (err error) {
		all, err = sqlapi.RepairPolicies(r.Context(), q)
		return err
	})
	if err != nil {
		dbError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"repair_policies": all})
}

func (s *Server) addRepairPolicy(w http.ResponseWriter, r *http.Request) {
	var spec sqlapi.RepairPolicySpec
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxPolicyBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("read the repair policy: %w (fields: %v)", err, sqlapi.ArgNames(spec)))
		return
	}
	var due *time.Time
	err := s.asCaller(r.Context(), callerCN(r), func(q sqlapi.Querier) (err error) {
		due, err = sqlapi.AddRepairPolicy(r.Context(), q, spec)
		return err
	})
	if err != nil {
		dbError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"policy_name": spec.Name, "next_due": due})
}

func (s *Server) dropRepairPolicy(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("policy_name")
	if name == "" {
		writeError(w, http.StatusBadRequest, fmt.Errorf("DELETE /api/v1/repair-policies needs ?policy_name="))
		return
	}
	var found bool
	err := s.asCaller(r.Context(), callerCN(r), func(q sqlapi.Querier) (err error) {
		found, err = sqlapi.ChangeRepairPolicy(r.Context(), q, name, sqlapi.DropPolicy)
		return err
	})
	if err != nil {
		dbError(w, err)
		return
	}
	if !found {
		writeError(w, http.StatusNotFound, fmt.Errorf("you have no repair policy %q", name))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"policy_name": name, "dropped": true})
}
