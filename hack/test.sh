#!/usr/bin/env bash
# Runs every check and test: builds the test tools if missing (cached under
# ~/.cache/roster), then formatting, clippy, unit tests and the tests against a real
# control plane. The same command CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(hack/install-test-tools.sh | tail -n 1)
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# Licences, banned and duplicated crates, crate sources (deny.toml), once cargo has fetched
# the crates; offline: the advisory database cannot be fetched here.
"$bin/cargo-deny" --offline check licenses bans sources
cargo test --workspace --locked
# The benchmark at a small N, on the test build: it keeps working (figures are for people).
BENCH_PROFILE=dev hack/bench.sh 200 --signin-seconds 5 --lookup-seconds 3
