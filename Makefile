# maclan: build, test and demo. Everything runs as root on a Debian machine;
# `.ci/run` installs the packages a fresh machine lacks.
GO          ?= go
BIN         := $(CURDIR)/bin
TOOLS       := $(CURDIR)/.tools/bin
CNI_BIN_DIR ?= /opt/cni/bin
VERSION     := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -s -w -X main.buildVersion=$(VERSION) \
	-X github.com/maclan-cni/maclan/plugins/maclan-ipam.buildVersion=$(VERSION)
PLUGINS     := maclan maclan-ipam maclan-ipam-etcd

# Reference plugins and clients that the tests run beside maclan.
REF_VERSION := v1.10.0
CNITOOL_VERSION := v1.3.0
CRICTL_VERSION := v1.34.0
REF_PLUGINS := main/macvlan ipam/host-local ipam/static ipam/dhcp meta/tuning meta/portmap

.PHONY: all build test test-unit test-integration tools deps install demo e2e lint clean bench reliability race fuzz

all: build

build: $(addprefix $(BIN)/,$(PLUGINS))

# maclan and maclan-ipam are one executable under two names (a hard link):
# run as maclan-ipam it is the IPAM, and maclan runs a delegated maclan-ipam
# call in process when CNI_PATH finds that very file (plugins/maclan/inprocess.go).
$(BIN)/maclan: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./plugins/maclan

$(BIN)/maclan-ipam: $(BIN)/maclan
	ln -f $< $@

# maclan-ipam-etcd is maclan-ipam with the etcd client linked in; maclan-ipam
# hands it every call that names the etcd store (plugins/maclan-ipam/handoff.go).
$(BIN)/maclan-ipam-etcd: FORCE
	CGO_ENABLED=0 $(GO) build -trimpath -tags etcd -ldflags '$(LDFLAGS)' -o $@ ./plugins/maclan-ipam-etcd

FORCE:

# Tools used by the integration tests: the reference plugins (to chain with
# and to compare against) and cnitool, installed into .tools/bin.
tools: $(TOOLS)/cnitool $(TOOLS)/macvlan

$(TOOLS)/cnitool:
	GOBIN=$(TOOLS) $(GO) install github.com/containernetworking/cni/cnitool@$(CNITOOL_VERSION)

$(TOOLS)/macvlan:
	GOBIN=$(TOOLS) $(GO) install $(addprefix github.com/containernetworking/plugins/plugins/,$(addsuffix @$(REF_VERSION),$(REF_PLUGINS)))

# Debian packages the lab needs (iproute2, ping, ...), installed if missing.
deps:
	./scripts/install-deps.sh

test: test-unit test-integration

test-unit:
	$(GO) test -count=1 ./...

# Needs root: builds a namespace lab and runs the built binaries in it.
test-integration: deps build tools
	MACLAN_BIN_DIR=$(BIN) MACLAN_TOOLS_DIR=$(TOOLS) \
		$(GO) test -tags integration -count=1 -timeout 15m ./integration/...

# Reliability (docs/reliability.md): the long soak and crash-injection tests
# (root; a few minutes), then the other reliability tests, which make test
# runs too. Figures go to $(RELIABILITY_OUT).
RELIABILITY_OUT ?= $(BIN)/reliability-figures.txt
reliability: deps build tools
	rm -f $(RELIABILITY_OUT)
	MACLAN_BIN_DIR=$(BIN) MACLAN_TOOLS_DIR=$(TOOLS) MACLAN_RELIABILITY=1 MACLAN_RELIABILITY_OUT=$(RELIABILITY_OUT) \
		$(GO) test -tags integration -count=1 -timeout 40m -run '^TestReliability' ./integration/...

# Unit tests under the race detector (needs cgo: gcc).
race:
	CGO_ENABLED=1 $(GO) test -race -count=1 ./...

# Each fuzz target for a bounded number of executions. A count, not a
# duration: go1.26's fuzz coordinator can report a spurious "context deadline
# exceeded" failure when a -fuzztime duration expires (golang/go#75804, fixed
# in go1.27); a count has no deadline to race. Every target caps the size of
# its input, so that no single input can run long; each entry is
# PACKAGE:TARGET[:EXECUTIONS] (FuzzReadResolvConf writes a file per input,
# about 10x slower than the others, so it runs fewer).
FUZZTIME ?= 500000x
FUZZ_TARGETS := \
	./pkg/config:FuzzParseNetConf ./pkg/ipam/ipamconf:FuzzParseIPAMConf \
	./pkg/ipam/store/disk:FuzzDecodeLease ./pkg/ipam/store/disk:FuzzDecodeAttach ./pkg/ipam/store/disk:FuzzChunkUnmarshal \
	./pkg/ipam/store/disk:FuzzEncodeLease ./pkg/cniresult:FuzzPrint \
	./pkg/ipam/iprange:FuzzParseAddrs ./pkg/ipam/iprange:FuzzRangeSet \
	./pkg/arp:FuzzAnswer ./pkg/logging:FuzzLogLine ./pkg/shim:FuzzParseRecord \
	./pkg/doctor:FuzzAdvertisedBy ./pkg/netcmd:FuzzParseNetwork \
	./pkg/ipam/store/etcd:FuzzDecodeLease ./pkg/ipam/store/etcd:FuzzParseKey ./pkg/ipam/store/etcd:FuzzDecodeJournal \
	./plugins/maclan-ipam:FuzzHostLocalFiles ./plugins/maclan-ipam:FuzzReadResolvConf:50000x
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; n=$(FUZZTIME); \
		case $$rest in *:*) n=$${rest#*:};; esac; \
		echo "fuzz $$name in $$pkg ($$n)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $$n $$pkg; \
	done

install: build
	install -d $(CNI_BIN_DIR)
	install -m 0755 $(BIN)/maclan $(BIN)/maclan-ipam-etcd $(CNI_BIN_DIR)/
	ln -f $(CNI_BIN_DIR)/maclan $(CNI_BIN_DIR)/maclan-ipam

# Needs root: maclan vs the reference plugins in the namespace lab; writes
# docs/benchmarks.md and docs/ipam-scale.png.
bench: deps build tools
	MACLAN_BIN_DIR=$(BIN) MACLAN_TOOLS_DIR=$(TOOLS) ./bench/run.sh

# DEMO_FLAGS=--keep leaves the lab up for exploring.
demo: deps build tools
	MACLAN_BIN_DIR=$(BIN) MACLAN_TOOLS_DIR=$(TOOLS) ./demo/demo.sh $(DEMO_FLAGS)

# End to end (root): a private containerd in a namespace lab runs maclan for
# a crictl pod sandbox (e2e/run.sh); then Debian's podman, on CNI, walks
# through Docker's macvlan example with `maclan network` (e2e/podman.sh).
# Both run; either failing fails the target.
e2e: deps build tools $(TOOLS)/loopback $(TOOLS)/crictl
	./scripts/install-deps.sh e2e
	rc=0; MACLAN_BIN_DIR=$(BIN) MACLAN_TOOLS_DIR=$(TOOLS) ./e2e/run.sh || rc=1; \
		MACLAN_BIN_DIR=$(BIN) ./e2e/podman.sh || rc=1; exit $$rc

$(TOOLS)/loopback:
	GOBIN=$(TOOLS) $(GO) install github.com/containernetworking/plugins/plugins/main/loopback@$(REF_VERSION)

$(TOOLS)/crictl:
	GOBIN=$(TOOLS) $(GO) install sigs.k8s.io/cri-tools/cmd/crictl@$(CRICTL_VERSION)

lint:
	gofmt -l . | tee /dev/stderr | (! read -r line)
	$(GO) vet ./...
	$(GO) vet -tags etcd ./plugins/maclan-ipam ./plugins/maclan-ipam-etcd
	$(GO) vet -tags integration ./integration/...

clean:
	rm -rf $(BIN)
