# infergate — run `make help` for the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

BUF_VERSION            := v1.75.0
PROTOC_GEN_GO_VERSION  := v1.36.12
CONNECT_VERSION        := v1.21.1

TOOLS := $(CURDIR)/.tools/bin
# The stamp names every pinned version, so changing one rebuilds the tools.
TOOLS_STAMP := $(TOOLS)/.stamp-buf-$(BUF_VERSION)-go-$(PROTOC_GEN_GO_VERSION)-connect-$(CONNECT_VERSION)
export PATH := $(TOOLS):$(PATH)

# Every module of the workspace, as ./dir/... patterns.
MODULES := $(shell go list -m -f '{{.Dir}}' 2>/dev/null | sed 's|^$(CURDIR)|.|')
PKGS    := $(addsuffix /...,$(MODULES))

.PHONY: help tools gen check-gen build test fuzz lint fmt run clean bench bench-coldstart bench-load bench-streams console-screenshots

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(TOOLS_STAMP):
	@mkdir -p $(TOOLS)
	@echo "building buf $(BUF_VERSION) and the protoc plugins into .tools/bin (first time only, a few minutes)"
	GOBIN=$(TOOLS) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	GOBIN=$(TOOLS) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) go install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(CONNECT_VERSION)
	@rm -f $(TOOLS)/.stamp-*
	@touch $@

# The OpenAPI plugin is the repository's own (services/internal/openapigen):
# rebuilt whenever its source changes.
OPENAPI_PLUGIN := $(TOOLS)/protoc-gen-infergate-openapi
$(OPENAPI_PLUGIN): $(wildcard services/internal/openapigen/*.go services/internal/openapigen/*/*.go)
	@mkdir -p $(TOOLS)
	go build -o $@ ./services/internal/openapigen/protoc-gen-infergate-openapi

tools: $(TOOLS_STAMP) $(OPENAPI_PLUGIN) ## build the pinned code generators

gen: $(TOOLS_STAMP) $(OPENAPI_PLUGIN) ## regenerate gen/ from proto/ (Go, Connect, and gen/openapi)
	buf lint
	find gen -name '*.go' -delete
	buf generate
	cd gen && go mod tidy

check-gen: gen ## fail if gen/ is not what proto/ generates
	@if [ -n "$$(git status --porcelain -- gen)" ]; then \
		echo "gen/ is stale: run 'make gen' and commit the result"; git status --short -- gen; exit 1; fi

build: ## build every binary into bin/
	@mkdir -p bin
	go build -o bin/ $(addprefix ./,$(wildcard services/*/cmd/*))

test: ## run every test of every module, with the race detector
	go test -race -count=1 -timeout 20m $(PKGS)
	# Allocation tests again without it: under the race detector sync.Pool
	# drops items on purpose, so they skip themselves there.
	go test -count=1 -run 'DoesNotAllocate' $(PKGS)

# The gateway's parsers against net/http's (differential fuzzing, issue
# 12). `make test` runs their seed corpus (smuggling cases and every input
# that once failed, testdata/fuzz) as ordinary tests; this runs each fuzzer
# for FUZZTIME. A failing input is written to testdata/fuzz: commit it with
# the fix.
FUZZTIME ?= 5m
FUZZ_H1  := ./services/gateway/internal/h1

fuzz: ## differential fuzzing of the gateway's HTTP/1.1 parsers, FUZZTIME each (default 5m)
	go test -run '^$$' -fuzz '^FuzzRequestAgainstNetHTTP$$' -fuzztime $(FUZZTIME) $(FUZZ_H1)
	go test -run '^$$' -fuzz '^FuzzResponseAgainstNetHTTP$$' -fuzztime $(FUZZTIME) $(FUZZ_H1)
	go test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) $(FUZZ_H1)

lint: $(TOOLS_STAMP) ## gofmt, go vet and buf lint
	@unformatted=$$(gofmt -l $(MODULES)); if [ -n "$$unformatted" ]; then \
		echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	go vet $(PKGS)
	buf lint

fmt: ## format the Go code
	gofmt -w $(MODULES)

run: build ## run the one-process stack with a demo deployment
	bin/infergate dev --demo

console-screenshots: ## regenerate docs/console/*.png (1280x800) from the console's browser test
	cd services/infergate && INFERGATE_TEST_REQUIRE_BROWSER=1 INFERGATE_CONSOLE_SCREENSHOTS=$(CURDIR)/docs/console \
		go test -count=1 -run TestConsoleStory ./internal/console_e2e

clean: ## remove build output (keeps the tool cache)
	rm -rf bin

# Benchmarks (issue 5; figures and machine in docs/benchmarks.md). None of
# them runs in `make test`: services/bench holds benchmarks only.
BENCH_GO := go test -run '^$$' -benchmem=false

bench: ## Go benchmarks: gateway decision, audit CheckAccess, propagation, control-plane writes, streaming
	cd services/internal && $(BENCH_GO) -bench 'BenchmarkDecision|BenchmarkHeapPerKey' -benchtime=2s ./authmap
	cd services/audit && $(BENCH_GO) -bench CheckAccess -benchtime=20x ./internal/auditservice
	cd services/bench && $(BENCH_GO) -bench 'BenchmarkPropagation|BenchmarkUnlinkKeyRPC' -benchtime=2000x -timeout 30m .
	cd services/bench && $(BENCH_GO) -bench 'BenchmarkCreateKey$$|BenchmarkLinkKey$$' -benchtime=8000x -count=3 -timeout 30m .
	cd services/bench && BENCH_NATS_SYNC=always $(BENCH_GO) -bench 'BenchmarkCreateKey$$' -benchtime=4000x -timeout 30m .
	cd services/bench && $(BENCH_GO) -bench 'BenchmarkLinkKeyBigDeployment' -benchtime=400x -timeout 30m .
	cd services/bench && $(BENCH_GO) -bench BenchmarkStreamingTTFB -benchtime=400x -timeout 30m .

COLDSTART_KEYS ?= 1000000

bench-coldstart: ## a fresh gateway's start over 1M KeyCreated + 1M KeyLinked events (a few minutes)
	@mkdir -p bin
	go build -o bin/bench-coldstart ./services/bench/cmd/bench-coldstart
	dir=$$(mktemp -d /tmp/infergate-coldstart.XXXXXX); trap 'rm -rf "$$dir"' EXIT; \
	bin/bench-coldstart generate --dir "$$dir" --keys $(COLDSTART_KEYS); \
	echo "== full replay, no snapshot"; \
	bin/bench-coldstart measure --dir "$$dir" --keys $(COLDSTART_KEYS); \
	echo "== from a snapshot at the stream's end"; \
	bin/bench-coldstart snapshot --dir "$$dir"; \
	for run in 1 2 3; do bin/bench-coldstart measure --dir "$$dir" --keys $(COLDSTART_KEYS) --from-snapshot; done; \
	echo "== from a snapshot keys/10 records (100,000 for 1M keys) before the end"; \
	bin/bench-coldstart snapshot --dir "$$dir" --at $$(( $(COLDSTART_KEYS) * 6 / 5 - $(COLDSTART_KEYS) / 10 )); \
	for run in 1 2 3; do bin/bench-coldstart measure --dir "$$dir" --keys $(COLDSTART_KEYS) --from-snapshot; done

bench-load: ## gateway throughput against HAProxy and nginx (root; installs wrk, haproxy, nginx)
	bash deploy/bench/load.sh

bench-streams: ## 10,000 long SSE streams through the gateway and nginx: memory, CPU, latency per stream (STREAMS=, DURATION=)
	bash deploy/bench/streams.sh
