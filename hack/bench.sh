#!/usr/bin/env bash
# The benchmark: builds roster (release), brings up the test control plane and Mailpit, and
# measures onboarding N users next to the floor, API traffic, idle writes after a restart,
# memory, start-up, sign-in and link look-ups. Prints a table; writes target/bench/N.json.
# Fails when what must hold at any size does not (one email per user, no writes when idle,
# every sign-in answered 200); timings are reported, not asserted.
#
#   hack/bench.sh [N] [roster-bench flags]     # N users, default 1000
#   hack/bench.sh 10000 --signin-seconds 30
#   BENCH_PROFILE=dev hack/bench.sh 200        # what CI runs: the test build, to keep it working
set -euo pipefail
cd "$(dirname "$0")/.."

users="${1:-1000}"
shift || true
profile="${BENCH_PROFILE:-release}"
dir="$profile"
[[ "$profile" == dev ]] && dir=debug
hack/install-test-tools.sh >/dev/null
cargo build --profile "$profile" --locked -p roster -p roster-bench --bins
exec "target/$dir/roster-bench" "$users" --roster "target/$dir/roster" --out target/bench "$@"
