// Package shim is the mTLS HTTP shim of ace-agent: ACE's REST routes (the Python seed's /ace/…
// and ACE Go's /api/v1/…) mapped onto the same inserts into ace.tasks that ace.table_diff(...)
// makes, never onto the engine.
//
// The client certificate's common name is the role that submits: the shim logs in to the local
// database AS that role (user = CN, presenting the agent's client certificate, which the node's
// pg_ident.conf maps onto members of ace_submitters), exactly as the agent logs in as a
// submitter. It never uses SET ROLE: code in a session can RESET ROLE to the login, so the wall
// is the login. Row-level security on ace.tasks then shows each caller only its own tasks.
//
// The shim holds no validation of its own: REST fields become the task's args JSON through one
// table (routes.go), and the BEFORE INSERT triggers and ace.validate_<type> judge them; their
// error becomes a 400 with the SQL message.
//
// Beyond ACE's routes it serves a finished diff as an ACE diff file, HTML or CSV (through
// engine/report), a Server-Sent Events stream of the caller's own tasks, /healthz, and, on a
// plain-HTTP address of its own, /metrics: task counts and durations from ace.tasks and every
// node's Merkle-tree lag from ace.mtree_status().
package shim
