#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, and the whole test suite
# (unit, property and integration tests against real servers on 127.0.0.1:0).
#
# Usage: scripts/test.sh            # everything
#        scripts/test.sh --quick    # tests only (no fmt/clippy)
#
# The Redis tests need `redis-server` and `redis-cli`: they are installed here
# when missing (apt); the tests themselves start their servers (standalone and
# a 3-master cluster) on ephemeral ports in temporary directories.
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

# The Redis tests (L2, invalidation fan-out, cluster) start their own
# redis-server processes on ephemeral ports through test-support; they only
# need the binaries. Under CI a missing Redis fails those tests.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  step "installing redis-server and redis-cli"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
  # The Debian package may start a system redis on 6379: the tests use their
  # own servers, so stop it and keep it from starting again.
  $sudo service redis-server stop >/dev/null 2>&1 || true
  if command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now redis-server >/dev/null 2>&1 || true
  fi
fi
step "redis: $(redis-server --version | awk '{print $3}')"

step "cargo test (workspace)"
cargo test --workspace --locked 2>&1 | tee /tmp/perfgate-test.$$.log
# Summarise the per-binary "test result" lines into one closing line.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "\nperfgate tests: %d passed, %d failed, %d ignored\n", p, f, i }' /tmp/perfgate-test.$$.log
rm -f /tmp/perfgate-test.$$.log
