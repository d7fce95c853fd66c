# The two set-up commands of the README: `make run` and `make test`.
CARGO ?= cargo
BIN := target/release/pidmap

.PHONY: setup build run test bench lint

setup:
	@bash scripts/setup

build: setup
	$(CARGO) build --release

# The main job with useful defaults.
run: build
	$(BIN) bench delete --map lpm --keys 100000 --missing-pct 1

# Every test: unit tests (fake kernel) and kernel tests (real bpf(), root).
test: setup
	$(CARGO) test --release

bench: build
	bash scripts/bench-delete

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings
