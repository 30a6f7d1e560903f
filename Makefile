# mtmux: two commands do everything on a fresh machine.
#   make demo   - build and run the main job
#   make test   - build and pass every test (Rust and C)
# Everything else is a building block of those or of CI (.ci/run).

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build demo test test-rust lint fmt-check clippy doc clean

all: build

build:
	$(CARGO) build --release

## ---- Rust ---------------------------------------------------------------
test-rust:
	$(CARGO) test --workspace

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint: fmt-check clippy

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

## ---- C ABI (issue 3): header, C examples, C tests ---------------------------

## ---- Command-line tool (issue 4) ------------------------------------------

## ---- Benchmarks (issue 5) -------------------------------------------------

## ---- Entry points ---------------------------------------------------------
test: test-rust

demo:
	$(CARGO) run --release --example hello

clean:
	$(CARGO) clean
