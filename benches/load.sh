#!/usr/bin/env bash
# Load benchmark: a release build of examples/bench_server.rs on 127.0.0.1, driven by wrk.
#
#   bash benches/load.sh            # 5 interleaved rounds of 3 s per endpoint and mode
#   ROUNDS=3 DURATION=2 bash benches/load.sh
#   REDIS=1 bash benches/load.sh    # adds /redis/slow: hits on a RedisStore (needs redis-server)
#   PEERS=0 bash benches/load.sh    # without nginx and Varnish (by default each runs when installed)
#
# When nginx and varnishd are installed, each is started in the foreground on loopback with its
# config under benches/ (nginx: proxy_cache; Varnish: its default caching), on the server's
# core, in front of /bare/static, and its hits run in the same rounds; the script stops them.
#
# Prints a markdown table: median req/s, p50 and p99 latency, and the median of the per-round
# ratios to /bare/static and to the no-cache reference that sends the same response. The server and wrk are pinned to separate cores when taskset exists.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-3}
CONNECTIONS=${CONNECTIONS:-32}
DEPTH=${DEPTH:-16}
ADDR=${ADDR:-127.0.0.1:8090}

if ! command -v wrk >/dev/null 2>&1; then
  echo "wrk is missing: install it with 'sudo apt-get install wrk' (Debian/Ubuntu)" >&2
  exit 1
fi
server_pin=(); client_pin=()
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
  server_pin=(taskset -c 0); client_pin=(taskset -c 1)
fi

work=$(mktemp -d)
redis_pid=
if [ "${REDIS:-0}" = 1 ]; then
  command -v redis-server >/dev/null 2>&1 || {
    echo "redis-server is missing: install it with 'sudo apt-get install redis-server'" >&2
    exit 1
  }
  cargo build --release --features redis --example bench_server >&2
  redis_port=${REDIS_PORT:-6399}
  # Redis shares the client's core: the server's core stays the app's alone.
  "${client_pin[@]}" redis-server --bind 127.0.0.1 --port "$redis_port" --save "" \
    --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
  redis_pid=$!
  export REDIS_URL="redis://127.0.0.1:$redis_port"
  sleep 0.5
else
  cargo build --release --example bench_server >&2
fi
"${server_pin[@]}" target/release/examples/bench_server "$ADDR" 1 >"$work/server.log" 2>&1 &
server=$!
peers=()
trap 'kill $server $redis_pid ${peers[*]} 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -fs "http://$ADDR/bare/static" >/dev/null 2>&1 && break; sleep 0.1; done

# Peers: the same 1 KiB from /bare/static through nginx's and Varnish's caches.
NGINX_ADDR=${NGINX_ADDR:-127.0.0.1:8091}
VARNISH_ADDR=${VARNISH_ADDR:-127.0.0.1:8092}
backend_port=${ADDR##*:}
peer_endpoints=()
if [ "${PEERS:-1}" = 1 ] && command -v nginx >/dev/null 2>&1; then
  mkdir -p "$work/nginx"
  sed -e "s|@WORK@|$work/nginx|g" -e "s|@LISTEN@|$NGINX_ADDR|g" -e "s|@BACKEND@|127.0.0.1:$backend_port|g" \
    -e "s|@USER@|$(id -un)|g" \
    benches/nginx.conf >"$work/nginx/nginx.conf"
  "${server_pin[@]}" nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" \
    >"$work/nginx/out.log" 2>&1 &
  peers+=($!)
  peer_endpoints+=("nginx|/bare/static|GET||$NGINX_ADDR")
fi
if [ "${PEERS:-1}" = 1 ] && command -v varnishd >/dev/null 2>&1; then
  sed -e "s|@BACKEND_PORT@|$backend_port|g" benches/varnish.vcl >"$work/varnish.vcl"
  "${server_pin[@]}" varnishd -F -a "$VARNISH_ADDR" -f "$work/varnish.vcl" -s malloc,64m \
    -n "$work/varnish" -j none -p thread_pools=1 >"$work/varnish.log" 2>&1 &
  peers+=($!)
  peer_endpoints+=("varnish|/bare/static|GET||$VARNISH_ADDR")
fi
for e in "${peer_endpoints[@]}"; do
  IFS='|' read -r name path _ _ addr <<<"$e"
  for _ in $(seq 100); do curl -fs "http://$addr$path" >/dev/null 2>&1 && break; sleep 0.1; done
  # The second answer is a hit in either cache.
  curl -fs "http://$addr$path" >/dev/null || { echo "$name did not answer: see its log" >&2; exit 1; }
done

# Fill the cache, and learn the ETag the 304 endpoint sends back.
curl -fs "http://$ADDR/cached/slow" >/dev/null
curl -fs "http://$ADDR/cached/big" >/dev/null
[ -n "$redis_pid" ] && curl -fs "http://$ADDR/redis/slow" >/dev/null && curl -fs "http://$ADDR/tiered/slow" >/dev/null
etag=$(curl -fsI "http://$ADDR/cached/slow" | tr -d '\r' | awk -F': ' 'tolower($1)=="etag"{print $2}')

cat >"$work/pipeline.lua" <<'LUA'
init = function(args)
  local depth = tonumber(args[1]) or 1
  if args[2] ~= nil and args[2] ~= "" then wrk.method = args[2] end
  if wrk.method == "POST" then wrk.body = "payload" end
  local r = {}
  for i = 1, depth do r[i] = wrk.format() end
  req = table.concat(r)
end
request = function() return req end
LUA

# name|path|method|extra header
endpoints=(
  "bare|/bare/static|GET|"
  "hit|/cached/slow|GET|"
  "304|/cached/slow|GET|If-None-Match: $etag"
  "post|/cached/post|POST|"
  "barepost|/bare/post|POST|"
  "big|/cached/big|GET|"
  "refhdr|/bare/headers|GET|"
  "ref304|/bare/304|GET|If-None-Match: $etag"
  "nostore|/cached/no-store|GET|"
  "barenostore|/bare/no-store|GET|"
)
endpoints+=("${peer_endpoints[@]}")
[ -n "$redis_pid" ] && endpoints+=("redis|/redis/slow|GET|" "tiered|/tiered/slow|GET|")

# One wrk run; prints "req/s p50_ms p99_ms".
run() {
  local path=$1 method=$2 hdr=$3 depth=$4 addr=${5:-$ADDR}
  local args=(-t1 "-c$CONNECTIONS" "-d${DURATION}s" --latency -s "$work/pipeline.lua")
  [ -n "$hdr" ] && args+=(-H "$hdr")
  "${client_pin[@]}" wrk "${args[@]}" "http://$addr$path" -- "$depth" "$method" | awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /^Requests\/sec:/ { rps=$2 }
    /^ +50%/ { p50=ms($2) }
    /^ +99%/ { p99=ms($2) }
    /Non-2xx or 3xx/ { bad=$NF }
    END { printf "%s %.3f %.3f %s\n", rps, p50, p99, (bad==""?0:bad) }'
}

results="$work/results"
: >"$results"
for round in $(seq "$ROUNDS"); do
  for depth in 1 "$DEPTH"; do
    for e in "${endpoints[@]}"; do
      IFS='|' read -r name path method hdr addr <<<"$e"
      read -r rps p50 p99 bad < <(run "$path" "$method" "$hdr" "$depth" "$addr")
      echo "$round $depth $name $rps $p50 $p99 $bad" >>"$results"
      echo "round $round depth $depth $name: $rps req/s (non-2xx/3xx: $bad)" >&2
    done
  done
done

python3 - "$results" "$DEPTH" <<'PY'
import sys, statistics, collections
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
rps = {(r[0], r[1], r[2]): float(r[3]) for r in rows}
by = collections.defaultdict(list)
# Each cached endpoint against the handler that sends the same response without the cache.
reference = {"hit": "refhdr", "304": "ref304", "post": "barepost", "redis": "hit", "tiered": "hit",
             "nostore": "barenostore", "nginx": "hit", "varnish": "hit"}
for rnd, depth, name, r, p50, p99, bad in rows:
    ref = reference.get(name)
    by[(depth, name)].append((float(r), float(p50), float(p99), float(r) / rps[(rnd, depth, "bare")],
                              float(r) / rps[(rnd, depth, ref)] if ref else None))
print("| endpoint | pipelining | req/s (median) | p50 ms | p99 ms | ratio to /bare/static | ratio to its reference |")
print("|---|---|---|---|---|---|---|")
names = {"bare": "/bare/static", "hit": "/cached/slow (hit)", "304": "/cached/slow (304)",
         "post": "/cached/post (POST)", "barepost": "/bare/post (POST, no cache)", "big": "/cached/big (64 KiB hit)",
         "refhdr": "/bare/headers (no cache, a hit's headers)", "ref304": "/bare/304 (no cache, a handler's 304)",
         "redis": "/redis/slow (hit, RedisStore)", "tiered": "/tiered/slow (hit, TieredStore)",
         "nostore": "/cached/no-store (pass-through)", "barenostore": "/bare/no-store (no cache)",
         "nginx": "nginx proxy_cache (hit of /bare/static)", "varnish": "Varnish (hit of /bare/static)"}
for depth in ("1", sys.argv[2]):
    for name in ("bare", "refhdr", "hit", "ref304", "304", "barepost", "post", "barenostore", "nostore",
                 "big", "redis", "tiered", "nginx", "varnish"):
        v = by[(depth, name)]
        if not v:
            continue
        med = lambda i: statistics.median(x[i] for x in v)
        # wrk records one latency per pipelined batch and prints 0 for its upper percentiles.
        p99 = f"{med(2):.3f}" if med(2) > 0 else "n/a"
        ref = f"{med(4):.2f} (to {names[reference[name]].split()[0]})" if name in reference else ""
        print(f"| {names[name]} | {'none' if depth == '1' else depth} | {med(0):,.0f} | {med(1):.3f} | {p99} | {med(3):.2f} | {ref} |")
# The cache's hits against the peers' hits of the same 1 KiB, per round.
for depth in ("1", sys.argv[2]):
    for peer in ("nginx", "varnish"):
        v = by[(depth, peer)]
        if v:
            ratio = statistics.median(1 / x[4] for x in v)
            print(f"\nhits / {peer} hits ({'no pipelining' if depth == '1' else 'pipelined ' + depth}): {ratio:.2f}")
PY
