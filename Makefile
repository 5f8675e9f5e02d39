# Sluice build. `make` builds build/sluiced, build/sluicectl, build/sluice-upstream
# and build/sluice-kube-sync. Sources are discovered by folder: every
# userspace/**/*.cc except the *_main.cc files goes into build/libsluice.a; tests/unit/**/*_test.cc and
# tests/integration/**/*_test.cc become one gtest binary each.

SHELL := /bin/bash
.DEFAULT_GOAL := all
BUILD ?= build
SAN ?=

CXX ?= g++
CLANG ?= clang
# Debian puts bpftool in /usr/sbin, which a non-login PATH may lack.
BPFTOOL ?= $(or $(shell command -v bpftool 2>/dev/null),/usr/sbin/bpftool)
PKGS := liburing libbpf yaml-0.1 yaml-cpp re2 fmt openssl libnghttp2 hiredis
DEPS_STAMP := $(BUILD)/.deps-ok

CXXFLAGS_BASE := -std=c++2b -O2 -g -Wall -Wextra -Werror -Wno-missing-field-initializers \
  -fno-omit-frame-pointer -MMD -MP -Iinclude -Iuserspace -I$(BUILD)/bpf -I$(BUILD)
ifeq ($(SAN),1)
  # g++ 12 reports false maybe-uninitialized warnings inside libstdc++
  # (std::regex, std::function) only under the sanitizers at -O1.
  CXXFLAGS_BASE += -fsanitize=address,undefined -fno-sanitize-recover=undefined -O1 -Wno-maybe-uninitialized
  LDFLAGS_SAN := -fsanitize=address,undefined
endif
CXXFLAGS ?=
CXXFLAGS += $(CXXFLAGS_BASE)
# Recursively expanded: pkg-config may only exist once install-deps has run.
LDLIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lxxhash -lpthread
LDFLAGS += $(LDFLAGS_SAN)

MAINS := userspace/daemon/sluiced_main.cc userspace/cli/sluicectl_main.cc \
         userspace/upstream_server/upstream_main.cc userspace/kubesync/sync_main.cc
LIB_SRCS := $(filter-out $(MAINS),$(shell find userspace -name '*.cc' | sort))
LIB_OBJS := $(LIB_SRCS:%.cc=$(BUILD)/obj/%.o)
UNIT_SRCS := $(shell find tests/unit -name '*_test.cc' 2>/dev/null | sort)
INTEG_SRCS := $(shell find tests/integration -name '*.cc' 2>/dev/null | sort)
BPFTEST_SRCS := $(shell find tests/bpf -name '*.cc' 2>/dev/null | sort)
FUZZ_SRCS := $(shell find tests/fuzz -name '*_fuzz.cc' 2>/dev/null | sort)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.cc=$(BUILD)/fuzz/%)

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_OBJS := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.bpf.o)
BPF_SKELS := $(BPF_SRCS:bpf/%.bpf.c=$(BUILD)/bpf/%.skel.h)

BINS := $(BUILD)/sluiced $(BUILD)/sluicectl $(BUILD)/sluice-upstream $(BUILD)/sluice-kube-sync

# `--version` of every binary: git describe of the tree built (a source
# tarball without .git says "unknown"; `make VERSION=x` overrides).
VERSION ?= $(shell git describe --always --dirty --tags 2>/dev/null || echo unknown)
PREFIX ?= /usr/local
DESTDIR ?=

# Keep generated BPF objects and skeletons: they are not throw-away
# intermediates (deleting them would rebuild every C++ object each time).
.SECONDARY:

.PHONY: all deps run test test-unit test-integration test-bpf test-asan bench bench-scale clean fuzz soak \
        install image FORCE
all: $(DEPS_STAMP) $(BINS)

# Installs packages only when one is missing (install-deps.sh is idempotent).
# DEPS_ARGS=--build-only: the build's packages alone (the Dockerfile).
DEPS_ARGS ?=
$(DEPS_STAMP): scripts/install-deps.sh
	@bash scripts/install-deps.sh $(DEPS_ARGS)
	@mkdir -p $(@D) && touch $@
deps:
	bash scripts/install-deps.sh

# --- eBPF: vmlinux.h from the running kernel's BTF, then objects and skeletons.
$(BUILD)/bpf/vmlinux.h: | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@
$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BUILD)/bpf/vmlinux.h $(wildcard bpf/lib/*.h) $(wildcard include/sluice/*.h)
	$(CLANG) -target bpf -D__TARGET_ARCH_x86 -g -O2 -Wall -Werror -I$(BUILD)/bpf -Iinclude -Ibpf -c $< -o $@
$(BUILD)/bpf/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(BPFTOOL) gen skeleton $< name sluice_$* > $@.tmp && mv $@.tmp $@

# --- C++
# Skeletons are order-only: the first build needs them to exist; after that
# -MMD records which objects really include them.
$(BUILD)/obj/%.o: %.cc | $(BPF_SKELS) $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -c $< -o $@
# `ar qc` appends every member, even two objects that share a basename.
$(BUILD)/libsluice.a: $(LIB_OBJS)
	@rm -f $@
	ar qc $@ $^ && ranlib $@
$(BUILD)/sluiced: $(BUILD)/obj/userspace/daemon/sluiced_main.o $(BUILD)/libsluice.a
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/sluicectl: $(BUILD)/obj/userspace/cli/sluicectl_main.o $(BUILD)/libsluice.a
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/sluice-upstream: $(BUILD)/obj/userspace/upstream_server/upstream_main.o $(BUILD)/libsluice.a
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS)
$(BUILD)/sluice-kube-sync: $(BUILD)/obj/userspace/kubesync/sync_main.o $(BUILD)/libsluice.a
	$(CXX) $(LDFLAGS) $^ -o $@ $(LDLIBS)

# Rewritten only when the version changes, so only the mains rebuild then.
$(BUILD)/version.h: FORCE
	@mkdir -p $(@D)
	@echo '#define SLUICE_VERSION "$(VERSION)"' > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi
$(MAINS:%.cc=$(BUILD)/obj/%.o): $(BUILD)/version.h

# The binaries, and a systemd unit for running sluiced outside Kubernetes
# (deploy/systemd). BPF programs are inside sluiced (skeletons).
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 0755 $(BUILD)/sluiced $(BUILD)/sluicectl $(BUILD)/sluice-kube-sync $(DESTDIR)$(PREFIX)/bin/
	sed 's|@PREFIX@|$(PREFIX)|g' deploy/systemd/sluiced.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/sluiced.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/sluiced.service

# The image deploy/kubernetes runs (Dockerfile), where docker or podman exists.
IMAGE ?= sluice/sluiced:dev
image:
	@tool=$$(command -v docker || command -v podman || true); \
	if [ -z "$$tool" ]; then echo "make image: neither docker nor podman is installed; skipped"; exit 0; fi; \
	if ! $$tool info >/dev/null 2>&1; then echo "make image: $$tool does not answer (no daemon?); skipped"; exit 0; fi; \
	echo "$$tool build -t $(IMAGE) --build-arg VERSION=$(VERSION) ."; \
	$$tool build -t $(IMAGE) --build-arg VERSION=$(VERSION) .

GTEST_LIBS := -lgtest -lgmock -lgtest_main
$(BUILD)/unit_tests: $(UNIT_SRCS:%.cc=$(BUILD)/obj/%.o) $(BUILD)/libsluice.a
	$(CXX) $(LDFLAGS) $^ -o $@ $(GTEST_LIBS) $(LDLIBS)
$(BUILD)/integration_tests: $(INTEG_SRCS:%.cc=$(BUILD)/obj/%.o) $(BUILD)/libsluice.a
	$(CXX) $(LDFLAGS) $^ -o $@ $(GTEST_LIBS) $(LDLIBS)
# The BPF tests drive real daemons with the integration harness.
BPFTEST_HARNESS := tests/integration/harness.cc tests/integration/mesh.cc
$(BUILD)/bpf_tests: $(BPFTEST_SRCS:%.cc=$(BUILD)/obj/%.o) $(BPFTEST_HARNESS:%.cc=$(BUILD)/obj/%.o) \
                    $(BUILD)/libsluice.a
	$(CXX) $(LDFLAGS) $^ -o $@ $(GTEST_LIBS) $(LDLIBS)

TEST_BINS := $(BUILD)/unit_tests $(BUILD)/integration_tests $(if $(BPFTEST_SRCS),$(BUILD)/bpf_tests)
# The fuzz targets run too, briefly (FUZZ_TEST_SECONDS each), as a smoke test.
FUZZ_TEST_SECONDS ?= 15
test: all $(TEST_BINS) $(FUZZ_BINS)
	@FUZZ_TEST_SECONDS=$(FUZZ_TEST_SECONDS) bash scripts/run-tests.sh $(BUILD)

test-asan:
	$(MAKE) BUILD=build-asan SAN=1 test

run: all
	@bash scripts/demo.sh $(BUILD)

# MINUTES (default 10) of mixed traffic, reloads and upstream kills.
soak: all
	@bash scripts/soak.sh $(BUILD)

bench: all
	@bash scripts/bench.sh $(BUILD)
	@bash scripts/bench-lb.sh $(BUILD)
	@bash scripts/bench-kernel.sh $(BUILD)
	@bash scripts/bench-tls.sh $(BUILD)
	@bash scripts/bench-h2.sh $(BUILD)
	@bash scripts/bench-scale.sh $(BUILD)

# SERVICES (10000) one-file services: ready time, RSS over RELOADS (20)
# one-file reloads, and how long each takes to go live.
bench-scale: all
	@bash scripts/bench-scale.sh $(BUILD)

# Fuzz targets (tests/fuzz/*_fuzz.cc) build with clang's libFuzzer, ASan and
# UBSan: `make fuzz` builds them, `make fuzz FUZZ_SECONDS=N` also runs each
# for N seconds from its seed corpus (scripts/run-fuzz.sh). clang 16: clang
# 14 cannot compile libstdc++ 12's std::expected (it lacks conditionally
# trivial destructors), and clang 16, which has them, still reports an older
# __cpp_concepts, on which libstdc++ gates <expected>: hence the -D.
FUZZ_CXX ?= clang++-16
FUZZ_SECONDS ?=
FUZZ_CXXFLAGS := -std=c++2b -O1 -g -Iinclude -Iuserspace -U__cpp_concepts -D__cpp_concepts=202002L \
  -Wno-builtin-macro-redefined -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
FUZZ_LIB_SRCS := $(shell find userspace/http userspace/istio userspace/config userspace/route userspace/tls -name '*.cc' | sort) \
  userspace/proxy/request_util.cc
FUZZ_LIB_OBJS := $(FUZZ_LIB_SRCS:%.cc=$(BUILD)/fuzz/obj/%.o)
$(BUILD)/fuzz/obj/%.o: %.cc | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -MMD -MP -c $< -o $@
$(BUILD)/fuzz/%_fuzz: tests/fuzz/%_fuzz.cc $(FUZZ_LIB_OBJS)
	@mkdir -p $(@D)
	$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -fsanitize=fuzzer $^ -o $@ $(LDLIBS)
fuzz: $(FUZZ_BINS)
	@if [ -n "$(FUZZ_SECONDS)" ]; then bash scripts/run-fuzz.sh $(BUILD) $(FUZZ_SECONDS); fi

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD)/obj $(BUILD)/fuzz/obj -name '*.d' 2>/dev/null)
