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
# After the tests, scripts/prometheus-scrape.sh lints perfgate's /metrics with
# `promtool check metrics` and has a real Prometheus scrape it; `prometheus`
# (which provides promtool) is installed here when missing, too.
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

# The Prometheus check (after the tests) needs `prometheus` and `promtool`,
# both in Debian's `prometheus` package. Without recommends: the node
# exporter and its collectors are not needed (and take longer to install).
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  step "installing prometheus (and promtool)"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package may start a system Prometheus on 9090 (perfgate's default
  # admin port): the check runs its own on an ephemeral port.
  $sudo service prometheus stop >/dev/null 2>&1 || true
  if command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
step "prometheus: $(prometheus --version 2>&1 | awk 'NR == 1 {print $3}')"

step "cargo test (workspace)"
cargo test --workspace --locked 2>&1 | tee /tmp/perfgate-test.$$.log
# Summarise the per-binary "test result" lines into one closing line.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "\nperfgate tests: %d passed, %d failed, %d ignored\n", p, f, i }' /tmp/perfgate-test.$$.log
rm -f /tmp/perfgate-test.$$.log

# promtool on perfgate's real /metrics after traffic, then a real Prometheus
# scraping it (about 5 s; the binary is the one cargo test built). Under CI a
# missing prometheus is a failure, never a skip.
step "prometheus scrape and promtool check metrics"
scripts/prometheus-scrape.sh
