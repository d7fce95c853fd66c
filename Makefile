# The two set-up commands of the README: `make run` and `make test`.
CARGO ?= cargo
# cargo's output directory (CARGO_TARGET_DIR when set)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/release/pidmap

TARGET := x86_64-unknown-linux-gnu
STATIC_BIN := $(TARGET_DIR)/$(TARGET)/release/pidmap

# `make install`: where the binary and the unit go (DESTDIR for staging).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
UNITDIR ?= /etc/systemd/system
DESTDIR ?=
# the binary installed: the static one (built by `make static` when missing)
INSTALL_BIN ?= $(STATIC_BIN)

.PHONY: setup setup-test build static run test test-kernels bench lint install

# What building needs; the tests need more (scripts/setup test).
setup:
	@bash scripts/setup build

setup-test:
	@bash scripts/setup test

build: setup
	$(CARGO) build --release

# One fully static x86_64 binary (libbpf, libelf, zlib are static already).
static: setup
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --target $(TARGET)
	@ls -l $(STATIC_BIN)

# The bundled demo workload: frame pointers, a few hot functions, a child.
DEMO := $(TARGET_DIR)/demo

$(DEMO): demo/demo.c
	@mkdir -p $(TARGET_DIR)
	gcc -O1 -g -fno-omit-frame-pointer -o $@ demo/demo.c

# The main job with useful defaults: profile the demo workload (about a
# second) into profile.folded and the flame graph profile.svg, with the
# top-functions table on stderr. Whole system: `pidmap profile`.
run: build $(DEMO)
	$(BIN) profile -F 999 -o profile.folded --svg profile.svg -- $(DEMO)

# Every test: unit tests (fake kernel), kernel tests (real bpf(), root),
# then the kernel matrix; the matrix runs even when a test failed, and
# either failing fails `make test`.
test: setup-test static
	@status=0; \
	PIDMAP_STATIC_BIN=$(abspath $(STATIC_BIN)) $(CARGO) test --release --no-fail-fast || status=1; \
	PIDMAP_STATIC_BIN=$(abspath $(STATIC_BIN)) bash scripts/kernels || status=1; \
	exit $$status

# The static binary booted on Debian's 6.1 and 6.12 kernels (cloud and
# PREEMPT_RT) under qemu, each running the scenarios of scripts/kernels.d.
test-kernels: setup-test static
	PIDMAP_STATIC_BIN=$(abspath $(STATIC_BIN)) bash scripts/kernels

bench: setup-test build static
	bash scripts/bench-delete
	bash scripts/bench-profile
	bash scripts/bench-footprint

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

$(STATIC_BIN):
	$(MAKE) static

# The static binary to $(BINDIR), the unit to $(UNITDIR) with ExecStart
# pointing at the installed binary; then `systemctl daemon-reload` and
# `systemctl enable --now pidmap`.
install: $(INSTALL_BIN)
	install -D -m 0755 $(INSTALL_BIN) $(DESTDIR)$(BINDIR)/pidmap
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's|^ExecStart=/usr/local/bin/pidmap |ExecStart=$(BINDIR)/pidmap |' scripts/systemd/pidmap.service > $(DESTDIR)$(UNITDIR)/pidmap.service.tmp
	chmod 0644 $(DESTDIR)$(UNITDIR)/pidmap.service.tmp
	mv $(DESTDIR)$(UNITDIR)/pidmap.service.tmp $(DESTDIR)$(UNITDIR)/pidmap.service
