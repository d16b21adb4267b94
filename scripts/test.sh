#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, and the whole test suite
# (unit, property and integration tests against real servers on 127.0.0.1:0).
#
# Usage: scripts/test.sh            # everything
#        scripts/test.sh --quick    # tests only (no fmt/clippy)
#
# The tests need nothing beyond the Rust toolchain today; services that
# later tests need (redis-server, PostgreSQL) are installed and started here,
# on ephemeral ports in a temporary directory, and stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

step() { printf '\n==> %s\n' "$*"; }

if [ "$quick" = 0 ]; then
  step "cargo fmt --check"
  cargo fmt --all -- --check
  step "cargo clippy (all targets, warnings are errors)"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "cargo test (workspace)"
cargo test --workspace --locked 2>&1 | tee /tmp/perfgate-test.$$.log
# Summarise the per-binary "test result" lines into one closing line.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "\nperfgate tests: %d passed, %d failed, %d ignored\n", p, f, i }' /tmp/perfgate-test.$$.log
rm -f /tmp/perfgate-test.$$.log
