#!/usr/bin/env bash
# Every check of the project, Rust and Go: what CI runs (through .ci/run).
#   scripts/test.sh
# Environment: LOOM_MAX_PREEMPTIONS (default 2), FUZZTIME for the Go fuzz targets (default: a count of about 10 s each).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n== %s\n' "$*"; }
# The bridge's tests run a real nats-server (.ci/run installs it under target/nats/bin); they fail without one.
export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$(command -v nats-server || echo "$PWD/target/nats/bin/nats-server")}"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p shmcast --all-targets --features async -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
RUSTDOCFLAGS="-D warnings" cargo doc -p shmcast --no-deps --features async --quiet

step "cargo test: unit, loom-free protocol tests, golden files, errors, CLI, multi-process, doc examples"
cargo test --workspace --exclude shmcast-bridge

step "the async feature: AsyncSubscriber against a producer process, its doc example, 1000 idle subscribers all woken"
cargo test -p shmcast --features async --test async_multiprocess --test async_fallback --test async_handoff
cargo test -p shmcast --features async --doc AsyncSubscriber
cargo run --quiet --features async --example async_idle -- 1000 100 2

step "shmcast-bridge against a real nats-server ($NATS_SERVER_BIN), and its Go example consumer"
cargo test -p shmcast-bridge
(cd shmcast-bridge/go-consumer && gofmt -l . | (! grep .) && go vet ./... && go test -count=1 ./... && go build -o /dev/null .)

step "the library as a dependency: its dependency list, MSRV, cargo package"
bash scripts/check_package.sh

step "loom models of the ring protocol (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-2})"
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" \
    CARGO_TARGET_DIR=target/loom cargo test --release --lib loom

step "release build of the CLI and the benchmark harness, and the benchmarks compile"
cargo build --release -p shmcast-cli -p shmcast-bench
cargo bench --no-run --quiet

step "shmcast-bench --quick and two rounds of the placement bench (smoke runs: they assert nothing about speed)"
target/release/shmcast-bench --quick
cargo bench --quiet -p shmcast-bench --bench placement -- 2

step "Go reader: gofmt, vet, arm64 cross-compile, tests (+ -race), live interop with the Rust CLI, fuzz"
SHMCAST_BIN="$PWD/target/release/shmcast" bash go-client/check.sh
