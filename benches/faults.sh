#!/usr/bin/env bash
# Fault-injection benchmark: two release builds of examples/fault_server.rs share one cache
# Redis (the one faults are injected into) and one database Redis (never faulted), driven and
# checked by examples/fault_client.rs.
#
#   bash benches/faults.sh                        # every scenario, RedisStore then TieredStore
#   DURATION=8 STORES=redis bash benches/faults.sh
#   SCENARIOS="freeze evict" bash benches/faults.sh
#
# Knobs: DURATION (client run, s, default 12), ITEMS (20), THREADS (8), FAULT_AT (when the
# fault starts, default DURATION/4), FAULT_FOR (how long it lasts, default DURATION*5/12),
# STORES ("redis tiered"), SCENARIOS (all six), BACKGROUND (1: wrk GET load on the first
# server during each run, when wrk exists). Every run gets fresh Redis and server processes.
#
# Prints a markdown table, one row per scenario and store (see benches/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-12}
ITEMS=${ITEMS:-20}
THREADS=${THREADS:-8}
FAULT_AT=${FAULT_AT:-$((DURATION / 4))}
FAULT_FOR=${FAULT_FOR:-$((DURATION * 5 / 12))}
STORES=${STORES:-redis tiered}
SCENARIOS=${SCENARIOS:-none slow freeze kill-restart restart-empty evict}
BACKGROUND=${BACKGROUND:-1}

for tool in redis-server redis-cli curl python3; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "$tool is missing (redis-server and redis-cli: 'sudo apt-get install redis-server')" >&2
    exit 1
  }
done
have_wrk=0
command -v wrk >/dev/null 2>&1 && have_wrk=1
[ "$have_wrk" = 1 ] || echo "wrk is missing: no background load, the evict flood uses curl" >&2
if [ $((FAULT_AT + FAULT_FOR + 1)) -gt "$DURATION" ]; then
  echo "DURATION must leave at least 1 s after the fault (FAULT_AT + FAULT_FOR + 1)" >&2
  exit 1
fi

cargo build --release --features redis --examples >&2
bin=${CARGO_TARGET_DIR:-target}/release/examples

work=$(mktemp -d)
read -r cache_port data_port port_a port_b < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
addr_a=127.0.0.1:$port_a
addr_b=127.0.0.1:$port_b

cache_pid= data_pid= pid_a= pid_b= client_pid=
background_pids=()

# Stops what this script started, by pid (a frozen Redis is woken first so that it can exit).
stop() {
  local pid
  for pid in "$@"; do
    if [ -n "$pid" ]; then
      kill -CONT "$pid" 2>/dev/null || true
      kill "$pid" 2>/dev/null || true
    fi
  done
  for pid in "$@"; do
    if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
  done
}
stop_all() {
  stop "$client_pid" "${background_pids[@]}" "$pid_a" "$pid_b" "$cache_pid" "$data_pid"
  cache_pid= data_pid= pid_a= pid_b= client_pid=
  background_pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

now_ms() { date +%s%3N; }

# start_redis PORT LOG: prints nothing, returns once Redis answers PING; the pid is in $!.
start_redis() {
  redis-server --bind 127.0.0.1 --port "$1" --save "" --appendonly no --dir "$work" \
    --enable-debug-command local >>"$work/$2" 2>&1 &
  started=$!
  for _ in $(seq 100); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "redis-server on port $1 did not start" >&2
  exit 1
}

start_servers() {
  local store=$1
  "$bin/fault_server" "$addr_a" "redis://127.0.0.1:$cache_port" "redis://127.0.0.1:$data_port" \
    "$store" >>"$work/server_a.log" 2>&1 &
  pid_a=$!
  "$bin/fault_server" "$addr_b" "redis://127.0.0.1:$cache_port" "redis://127.0.0.1:$data_port" \
    "$store" >>"$work/server_b.log" 2>&1 &
  pid_b=$!
  for addr in "$addr_a" "$addr_b"; do
    for _ in $(seq 100); do
      curl -fs "http://$addr/lost" >/dev/null 2>&1 && continue 2
      sleep 0.05
    done
    echo "fault_server on $addr did not start (see $work/server_*.log)" >&2
    exit 1
  done
}

# Distinct query strings of one item, to fill the cache Redis past maxmemory.
cat >"$work/flood.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/items/1?q=" .. counter .. "-" .. math.random(1e9))
end
LUA

flood() {
  local until=$1
  if [ "$have_wrk" = 1 ]; then
    wrk -t1 -c8 "-d${FAULT_FOR}s" -s "$work/flood.lua" "http://$addr_b" >/dev/null 2>&1 || true
  else
    local n=0
    while [ "$(now_ms)" -lt "$until" ]; do
      n=$((n + 1))
      curl -s "http://$addr_b/items/1?q=$n" >/dev/null || true
    done
  fi
}

# inject SCENARIO: the fault, from now until it is over (FAULT_FOR seconds, or a quick restart).
inject() {
  local until=$(($(now_ms) + FAULT_FOR * 1000))
  case $1 in
    none) sleep "$FAULT_FOR" ;;
    slow)
      # Each DEBUG SLEEP blocks Redis for 200 ms: far past RedisStore's 50 ms timeout.
      while [ "$(now_ms)" -lt "$until" ]; do
        redis-cli -p "$cache_port" DEBUG SLEEP 0.2 >/dev/null 2>&1 || true
        sleep 0.02
      done
      ;;
    freeze)
      kill -STOP "$cache_pid"
      sleep "$FAULT_FOR"
      kill -CONT "$cache_pid"
      ;;
    kill-restart)
      kill -9 "$cache_pid"
      wait "$cache_pid" 2>/dev/null || true
      sleep "$FAULT_FOR"
      start_redis "$cache_port" cache.log
      cache_pid=$started
      ;;
    restart-empty)
      redis-cli -p "$cache_port" FLUSHALL >/dev/null
      kill -9 "$cache_pid"
      wait "$cache_pid" 2>/dev/null || true
      start_redis "$cache_port" cache.log
      cache_pid=$started
      ;;
    evict) flood "$until" ;;
    *)
      echo "unknown scenario $1" >&2
      exit 1
      ;;
  esac
}

rows="$work/rows"
: >"$rows"
for store in $STORES; do
  for scenario in $SCENARIOS; do
    start_redis "$cache_port" cache.log
    cache_pid=$started
    start_redis "$data_port" data.log
    data_pid=$started
    if [ "$scenario" = evict ]; then
      redis-cli -p "$cache_port" CONFIG SET maxmemory 2mb >/dev/null
      redis-cli -p "$cache_port" CONFIG SET maxmemory-policy allkeys-lru >/dev/null
    fi
    start_servers "$store"
    if [ "$have_wrk" = 1 ] && [ "$BACKGROUND" = 1 ]; then
      wrk -t1 -c2 "-d${DURATION}s" "http://$addr_a/items/1" >/dev/null 2>&1 &
      background_pids+=($!)
    fi
    "$bin/fault_client" "$addr_a" "$addr_b" "$DURATION" "$ITEMS" "$THREADS" \
      "$work/timeline" >"$work/result" &
    client_pid=$!
    sleep "$FAULT_AT"
    fault_start=$(now_ms)
    inject "$scenario"
    fault_end=$(now_ms)
    wait "$client_pid"
    client_pid=
    evicted=$(redis-cli -p "$cache_port" INFO stats 2>/dev/null | tr -d '\r' |
      awk -F: '$1=="evicted_keys"{print $2}')
    echo "$scenario $store $fault_start $fault_end ${evicted:-0} $(cat "$work/result")" >>"$rows"
    cp "$work/timeline" "$work/timeline.$scenario.$store"
    echo "$store $scenario: $(cat "$work/result") evicted_keys=${evicted:-?}" >&2
    stop_all
  done
done

python3 - "$rows" "$work" <<'PY'
import statistics, sys

SLOT = 100  # ms, the client's timeline slots

def recovery(path, start, end):
    """Seconds from the fault's end to the first second of healthy slots after it."""
    slots = [tuple(map(int, l.split())) for l in open(path) if l.strip()]
    before = [ok for at, ok, bad in slots[5:] if at + SLOT <= start]
    floor = statistics.median(before) / 2 if before else 1
    healthy = lambda s: s[2] == 0 and s[1] >= floor
    # The last slot is partial (the client stopped sending in it): leave it out.
    full = slots[:-1]
    for i, s in enumerate(full):
        if s[0] + SLOT <= end:
            continue
        window = full[i:i + 10]  # a healthy second, or what is left of the run (>= 300 ms)
        if len(window) < 3:
            break
        if all(healthy(w) for w in window):
            return f"{max(0, s[0] - end) / 1000:.1f}"
    return "not recovered"

print("| scenario | store | requests | non-2xx | 412 | 503 | stale reads | lost updates | max latency ms | time to recover s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for line in open(sys.argv[1]):
    scenario, store, start, end, evicted, *fields = line.split()
    r = dict(f.split("=", 1) for f in fields)
    non2xx = r["non2xx"] + (f" (+{r['errors']} transport errors)" if r["errors"] != "0" else "")
    name = scenario + (f" ({evicted} evicted)" if scenario == "evict" else "")
    rec = recovery(f"{sys.argv[2]}/timeline.{scenario}.{store}", int(start), int(end))
    print(f"| {name} | {store} | {r['requests']} | {non2xx} | {r['refused412']} | {r['unavailable503']} "
          f"| {r['stale']} | {r['lost']} | {r['max_ms']} | {rec} |")
PY
