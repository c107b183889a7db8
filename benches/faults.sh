#!/usr/bin/env bash
# Fault benchmark: the fault suite (tests/faults.rs) built in release mode, each scenario a
# few seconds of reads, conditional writes and plain writes against two app servers (two
# `Cache`s that share nothing in-process but one redis-server), while a fault is injected:
# none, slow replies (DEBUG SLEEP past the timeout), a freeze (SIGSTOP/SIGCONT), kill and
# restart, restart empty, maxmemory with allkeys-lru under a flood of query strings; and a
# TieredStore run.
#
#   bash benches/faults.sh          # needs redis-server (Debian: apt-get install redis-server)
#   ROUNDS=3 bash benches/faults.sh # repeats the suite, one table row per scenario and round
#
# Prints a markdown table: requests, statuses other than 2xx/412/503, 412s, 503s (the
# documented answer to a conditional write that could not be judged), stale reads after a
# completed write, lost updates (conditional writes the application saw against a version no
# longer current), the slowest request, and how long the cache took to serve hits again.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-1}
command -v redis-server >/dev/null 2>&1 || {
  echo "redis-server is missing: install it with 'sudo apt-get install redis-server'" >&2
  exit 1
}
cargo test --release --all-features --test faults --no-run >&2
echo "| scenario | store | requests | writes | other non-2xx | 412 | 503 | stale reads | lost updates | max latency ms | hits again after |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for _ in $(seq "$ROUNDS"); do
  cargo test --release --all-features --test faults -- --nocapture 2>&1 |
    perl -ne 'print "| $1 | $2 | $3 | $4 | $7 | $5 | $6 | $8 | $10 | $9 | $11 |\n" if
      /^(\w+) \((\w+)\): requests=(\d+) ok=\d+ writes=(\d+) 412=(\d+) 503=(\d+) other=(\d+) stale=(\d+) max_ms=(\d+) lost=(\d+) recovered_in=(\S+)/'
done
