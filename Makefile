# ace-agent: find and repair data drift between the nodes of a replicated PostgreSQL cluster.

GO          ?= go
BIN         := bin/ace-agent
CLUSTER_DIR ?= .cluster
NODES       ?= 3

ROWS        ?= 1000000
DIFFS       ?= 200

.PHONY: build test vet demo bench cluster-up cluster-down clean

build: $(BIN)

$(BIN): $(shell find . -name '*.go' -not -path './.cluster/*') $(wildcard migrations/*.sql migrations/code/*.sql) go.mod go.sum
	$(GO) build -o $(BIN) ./cmd/ace-agent

vet:
	$(GO) vet ./...

# Every test starts its own throwaway PostgreSQL 15 instances on loopback ports. As root, the
# Debian packages the tests need are installed first; otherwise the exact apt-get line is printed.
test: vet
	./internal/prereq/prereq.sh test
	$(GO) test -count=1 -timeout 30m ./...

# The whole story on 3 local nodes: cluster, schema, agents, drift, and the diff from psql.
demo: build
	./internal/prereq/prereq.sh demo
	CLUSTER_DIR=$(CLUSTER_DIR) ./internal/demo/demo.sh

# Times table-diff against one hashing pass over each node's table, in the same run, on NODES
# local nodes (ROWS rows each, DIFFS planted differences), then the schema diffs; writes
# bench-results/bench.json. ACE_BIN=/path/to/ace also times ACE's schema-diff on the same tables;
# BENCH_FLAGS=-only-schema measures the schema diffs alone.
bench: build
	$(GO) run ./internal/bench -rows $(ROWS) -diffs $(DIFFS) -nodes $(NODES) -bin $(BIN) -out bench-results/bench.json $(BENCH_FLAGS)

cluster-up:
	$(GO) run ./internal/devcluster up --dir $(CLUSTER_DIR) --nodes $(NODES)

cluster-down:
	@if [ -f $(CLUSTER_DIR)/agents.pid ]; then kill $$(cat $(CLUSTER_DIR)/agents.pid) 2>/dev/null || true; fi
	$(GO) run ./internal/devcluster down --dir $(CLUSTER_DIR)

clean: cluster-down
	rm -rf bin
