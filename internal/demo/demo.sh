#!/usr/bin/env bash
# make demo: three local PostgreSQL 15 nodes, the ace schema and an agent on each, drift planted
# on purpose, and a DBA finding and repairing it from psql.
set -euo pipefail
cd "$(dirname "$0")/../.."

CLUSTER_DIR=${CLUSTER_DIR:-.cluster}
BIN=./bin/ace-agent
DB=demo
ROWS=${DEMO_ROWS:-200000}

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '\033[36m$ %s\033[0m\n' "$*"; }

bold "Starting 3 PostgreSQL 15 nodes in $CLUSTER_DIR (certificate authentication only, no trust)"
if [ -f "$CLUSTER_DIR/agents.pid" ]; then kill $(cat "$CLUSTER_DIR/agents.pid") 2>/dev/null || true; fi
go build -o bin/devcluster ./internal/devcluster
DEVCLUSTER=./bin/devcluster
$DEVCLUSTER down --dir "$CLUSTER_DIR" >/dev/null
$DEVCLUSTER up --dir "$CLUSTER_DIR" --nodes 3

# Connection strings, each with the certificate of the role that logs in (or, with a fourth
# argument, another certificate: the agent's, which pg_ident.conf maps onto submitters).
dsn_as() { # dsn_as NODE DB ROLE [CERT]
  $DEVCLUSTER dsn --dir "$CLUSTER_DIR" --node "$1" --db "$2" --user "$3" --cert "${4:-$3}"
}
admin_dsn() { dsn_as "$1" postgres postgres; }
dsn() { dsn_as "$1" $DB dba; }                      # the DBA who diffs and repairs
agent_dsn() { dsn_as "$1" $DB ace_agent; }          # the agent's own login
node_conninfo() { # how ace.nodes reaches a node: verified TLS, no user, no certificate
  $DEVCLUSTER server --dir "$CLUSTER_DIR" --node "$1" --db $DB
}
psql_on() { # psql_on NODE SQL...: as the DBA
  local node=$1; shift
  psql "$(dsn "$node")" -X -q -v ON_ERROR_STOP=1 -P pager=off "$@"
}
admin_on() { # admin_on NODE SQL...: as the superuser, in the demo database
  local node=$1; shift
  psql "$(dsn_as "$node" $DB postgres)" -X -q -v ON_ERROR_STOP=1 -P pager=off "$@"
}

bold "Creating database '$DB', the agent's login, and a DBA who may submit tasks, on every node"
show "CREATE ROLE ace_agent LOGIN REPLICATION; CREATE ROLE ace_submitters NOLOGIN; CREATE ROLE dba LOGIN IN ROLE ace_submitters"
for n in n1 n2 n3; do
  psql "$(admin_dsn $n)" -X -q -v ON_ERROR_STOP=1 <<SQL >/dev/null
CREATE DATABASE $DB;
CREATE ROLE ace_agent LOGIN REPLICATION;    -- the agent's own login: no superuser; REPLICATION for Merkle trees
GRANT CREATE ON DATABASE $DB TO ace_agent;  -- it installs and owns the ace schema
GRANT pg_signal_backend TO ace_agent;
CREATE ROLE ace_submitters NOLOGIN;
CREATE ROLE dba LOGIN IN ROLE ace_submitters;
SQL
done
show "pg_ident.conf on every node: ace  ace_agent  dba   (the agent's certificate may log in as dba)"
$DEVCLUSTER map --dir "$CLUSTER_DIR" --cert ace_agent --role dba
# env.sh (written by up for the superuser in the postgres database) now points at the demo's
# database, as the DBA: what sources it reaches the ace schema installed there.
$DEVCLUSTER env --dir "$CLUSTER_DIR" --db $DB --user dba

bold "Installing the ace schema as the agent and registering the nodes on every node"
for n in n1 n2 n3; do
  show "ACE_DSN='$(agent_dsn $n)' ace-agent install"
  ACE_DSN="$(agent_dsn $n)" $BIN install
  for peer in n1 n2 n3; do
    ACE_DSN="$(agent_dsn $n)" $BIN node add "$peer" "$(node_conninfo $peer)" --cluster demo >/dev/null
  done
done
psql_on n1 -c "SELECT node_name, cluster_name, conninfo FROM ace.nodes"

bold "Starting an agent beside each node"
: >"$CLUSTER_DIR/agents.pid"
for n in n1 n2 n3; do
  ACE_DSN="$(agent_dsn $n)" ACE_NODE=$n ACE_POLL_INTERVAL=1s $BIN run >"$CLUSTER_DIR/agent-$n.log" 2>&1 &
  echo $! >>"$CLUSTER_DIR/agents.pid"
  echo "agent $n: pid $!, log $CLUSTER_DIR/agent-$n.log"
done
show "ace-agent doctor   # can the agent log in as every submitter, on every node?"
ACE_DSN="$(agent_dsn n1)" ACE_NODE=n1 $BIN doctor

bold "Loading public.orders ($ROWS rows) identically on every node, as the DBA"
for n in n1 n2 n3; do
  admin_on $n -c "GRANT CREATE ON SCHEMA public TO dba" >/dev/null
  psql_on $n <<SQL
CREATE TYPE order_state AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE public.orders (
    id       bigint PRIMARY KEY,
    customer text,
    note     text,
    amount   numeric(12,2),
    placed   timestamptz,
    state    order_state,
    tags     text[],
    details  jsonb
);
INSERT INTO orders
SELECT g, 'customer ' || (g % 997), CASE WHEN g % 5 = 0 THEN NULL ELSE 'note ' || g END, (g % 10000) * 1.25,
       '2025-01-01 00:00:00+00'::timestamptz + g * interval '1 minute', (ARRAY['new','paid','shipped']::order_state[])[g % 3 + 1],
       ARRAY['a', 'b|c'], jsonb_build_object('sku', g % 100, 'qty', g % 7)
FROM generate_series(1, $ROWS) g;
ANALYZE orders;
SQL
done

bold "Planting drift: the kind replication lag, conflicts and manual fixes leave behind"
show "n2: UPDATE orders SET amount = amount + 0.01 WHERE id = 4242"
psql_on n2 -c "UPDATE orders SET amount = amount + 0.01 WHERE id = 4242"
show "n3: DELETE FROM orders WHERE id IN (17, 150000)"
psql_on n3 -c "DELETE FROM orders WHERE id IN (17, 150000)"
show "n1: INSERT INTO orders (id, customer) VALUES ($((ROWS + 1)), 'only on n1')"
psql_on n1 -c "INSERT INTO orders (id, customer) VALUES ($((ROWS + 1)), 'only on n1')"
show "n2: UPDATE orders SET note = '' WHERE id = 5   -- NULL on the others"
psql_on n2 -c "UPDATE orders SET note = '' WHERE id = 5"
show "n3: UPDATE orders SET amount = 3000.0 WHERE id = 2400  -- 3000.00 elsewhere: equal, not drift"
psql_on n3 -c "UPDATE orders SET amount = 3000.0 WHERE id = 2400"

bold "A DBA on n1 runs the diff from psql"
show "psql -c \"CALL ace.run_table_diff('public.orders')\""
psql_on n1 -c "CALL ace.run_table_diff('public.orders')" -x
TASK=$(psql_on n1 -At -c "SELECT task_id FROM ace.tasks ORDER BY submitted_at DESC LIMIT 1")

bold "The differing rows, as rows"
show "SELECT pk, kind FROM ace.diff_rows('$TASK')"
psql_on n1 -c "SELECT pk, kind FROM ace.diff_rows('$TASK')"
show "SELECT jsonb_pretty(rows) FROM ace.diff_rows('$TASK') WHERE pk = '{\"id\": 5}'   -- NULL vs ''"
psql_on n1 -c "SELECT jsonb_pretty(rows) FROM ace.diff_rows('$TASK') WHERE pk = '{\"id\": 5}'"
show "SELECT pk, kind, rows->'n1'->>'amount' AS n1, rows->'n2'->>'amount' AS n2, rows->'n3'->>'amount' AS n3 ..."
psql_on n1 -c "SELECT pk->>'id' AS id, kind, rows->'n1'->>'amount' AS n1_amount, rows->'n2'->>'amount' AS n2_amount, rows->'n3'->>'amount' AS n3_amount FROM ace.diff_rows('$TASK')"

bold "The same diff from the command line, with an exit code for scripts"
show "ace-agent table-diff public.orders --nodes n1,n3"
set +e
ACE_DSN="$(dsn n1)" $BIN table-diff public.orders --nodes n1,n3
echo "exit code: $? (0 = in sync, 1 = differences, 2 = error)"
set -e
show "ace-agent diff export $TASK -o $CLUSTER_DIR/orders_diffs.json"
ACE_DSN="$(dsn n1)" $BIN diff export "$TASK" -o "$CLUSTER_DIR/orders_diffs.json"

bold "Repairing from psql: n1 is the source of truth"
show "CALL ace.run_table_repair('$TASK', source_of_truth => 'n1')"
psql_on n1 -c "CALL ace.run_table_repair('$TASK', source_of_truth => 'n1')" -x
REPAIR=$(psql_on n1 -At -c "SELECT task_id FROM ace.tasks WHERE task_type = 'table-repair' ORDER BY submitted_at DESC LIMIT 1")
show "SELECT node, action, pk, reason FROM ace.repair_rows('$REPAIR')"
psql_on n1 -c "SELECT node, action, pk, reason FROM ace.repair_rows('$REPAIR')"

bold "Diffing again: the nodes converged"
show "psql -c \"CALL ace.run_table_diff('public.orders')\""
psql_on n1 -c "CALL ace.run_table_diff('public.orders')" -x | grep -v '^summary'
show "ace-agent table-diff public.orders"
ACE_DSN="$(dsn n1)" $BIN table-diff public.orders --quiet
echo "exit code: $?"

bold "Merkle trees: later diffs cost what changed, not what exists"
show "GRANT CREATE ON DATABASE $DB TO dba   -- tracking publishes the table, which needs it (and ownership)"
for n in n1 n2 n3; do admin_on $n -c "GRANT CREATE ON DATABASE $DB TO dba" >/dev/null; done
show "CALL ace.run_mtree_build('public.orders')"
psql_on n1 -c "CALL ace.run_mtree_build('public.orders')" -x | grep -v '^summary\|^-\[ RECORD'
show "n3: UPDATE orders SET note = 'changed after the build' WHERE id = 777"
psql_on n3 -c "UPDATE orders SET note = 'changed after the build' WHERE id = 777"
show "CALL ace.run_mtree_diff('public.orders')   -- rehashes only the leaf that changed"
psql_on n1 -c "CALL ace.run_mtree_diff('public.orders')" -x | grep -v '^summary\|^-\[ RECORD'
show "SELECT result->'mtree' FROM ace.tasks WHERE task_type = 'mtree-diff' ..."
psql_on n1 -c "SELECT jsonb_pretty(result->'mtree') AS mtree FROM ace.tasks WHERE task_type = 'mtree-diff' ORDER BY submitted_at DESC LIMIT 1"
sleep 6 # the agents report every heartbeat
show "SELECT table_name, node_name, leaves, row_count, dirty_leaves, lag_bytes, warning FROM ace.mtree_status()"
psql_on n1 -c "SELECT table_name, node_name, leaves, row_count, dirty_leaves, lag_bytes, warning FROM ace.mtree_status()"

bold "Done"
cat <<EOF
The cluster and its agents are still running. Try it yourself, as the DBA:
  source $CLUSTER_DIR/env.sh; psql "\$ACE_N1_DSN"     # the DBA, in database $DB
  SELECT ace.table_diff('public.orders', nodes => ARRAY['n1','n2']);
  SELECT status, result FROM ace.wait('<task id>');
  SELECT ace.mtree_diff('public.orders');   -- the tree is kept fresh by the agents
  SELECT ace.mtree_teardown();              -- stop tracking: publications and slots go
Stop everything with: make cluster-down
EOF
