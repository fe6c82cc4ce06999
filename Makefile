# kuryr-pools: see README.md. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

MODULE      := github.com/kuryr-pools/kuryr
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X $(MODULE)/version.Version=$(VERSION)
BINARIES    := kuryr-cni kuryr-agent kuryr-controller kuryr-pools
BIN         := bin
STATE_DIR   ?= /var/tmp/kuryr-test
FUZZTIME    ?= 20s
GO          ?= go
IMAGE       ?= localhost/kuryr/kuryr-pools:$(VERSION)
GOLANGCI    ?= v2.6.2

export KURYR_STATE_DIR := $(STATE_DIR)

.PHONY: help
help: ## List every target with what it does.
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the four binaries into bin/ (static, version stamped).
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

.PHONY: build-race
build-race: ## The four binaries with the race detector, into bin/race/ (the end-to-end tests of make test run these).
	@mkdir -p $(BIN)/race
	CGO_ENABLED=1 $(GO) build -race -ldflags '-X $(MODULE)/version.Version=$(VERSION)' -o $(BIN)/race/ $(addprefix ./cmd/,$(BINARIES))

.PHONY: test
test: ## Everything: starts neutron-server, OVS, kube-apiserver, the VM; unit, integration, fuzz, e2e (needs root).
	hack/test.sh

.PHONY: test-unit
test-unit: ## Fast unit tests only; components that are missing are skipped.
	$(GO) test ./...

.PHONY: bench
bench: build ## The benchmark run: one table of ADD/DEL latencies and Neutron requests (needs root).
	hack/bench.sh

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 20s).
	hack/fuzz.sh $(FUZZTIME)

.PHONY: cover
cover: ## Statement coverage of pool/ and config/.
	$(GO) test -cover ./pool/ ./config/

.PHONY: demo
demo: build ## The demo: standalone agent on an embedded Neutron stand-in, real netns, pods through the real kuryr-cni (needs root).
	hack/demo.sh

.PHONY: demo-neutron
demo-neutron: build ## The same demo against the real neutron-server started by hack/neutron-up.sh.
	DEMO_NEUTRON=real hack/demo.sh

.PHONY: lint
lint: ## golangci-lint with the committed .golangci.yml (installs it from the Go module proxy if missing).
	@command -v golangci-lint >/dev/null || $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI)
	golangci-lint run ./...

.PHONY: vet
vet: ## go vet.
	$(GO) vet ./...

.PHONY: fmt
fmt: ## gofmt every Go file.
	gofmt -w $$(git ls-files '*.go')

.PHONY: image
image: ## Build the container image where a container engine exists (docker or podman).
	@engine=$$(command -v podman || command -v docker); \
	if [ -z "$$engine" ] || ! $$engine info >/dev/null 2>&1; then echo "make image: no running container engine here; skipping"; exit 0; fi; \
	$$engine build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

.PHONY: down
down: ## Stop every test component started by make test.
	-hack/neutron-down.sh
	-hack/ovs-down.sh

.PHONY: clean
clean: ## Remove build output.
	rm -rf $(BIN) _output
