# The two set-up commands of the README: `make run` and `make test`.
CARGO ?= cargo
# cargo's output directory (CARGO_TARGET_DIR when set)
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/release/pidmap

TARGET := x86_64-unknown-linux-gnu
STATIC_BIN := $(TARGET_DIR)/$(TARGET)/release/pidmap

.PHONY: setup setup-test build static run test bench lint

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

# The main job with useful defaults: profile the whole system for 10 s.
run: build
	$(BIN) profile --duration 10 -o profile.folded

# Every test: unit tests (fake kernel) and kernel tests (real bpf(), root).
test: setup-test static
	PIDMAP_STATIC_BIN=$(abspath $(STATIC_BIN)) $(CARGO) test --release

bench: setup-test build static
	bash scripts/bench-delete
	bash scripts/bench-profile
	bash scripts/bench-footprint

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings
