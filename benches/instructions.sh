#!/usr/bin/env bash
# Instructions per in-process request, by case, counted with valgrind's callgrind (repeatable
# where wall-clock timings are noisy). Needs valgrind (`apt-get install valgrind`).
#   bash benches/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
cargo bench --bench instructions --no-run >&2 2>/dev/null
bin=$(ls -t target/release/deps/instructions-* | grep -v '\.d$' | head -1)
count() { # instructions for $2 requests of case $1
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
    awk '/Collected :/ { print $NF }'
}
blocks() { # heap blocks allocated for $2 requests of case $1 (memcheck's heap summary)
  valgrind --tool=memcheck --leak-check=no "$bin" "$1" "$2" 2>&1 |
    awk '/total heap usage:/ { gsub(",", "", $5); print $5 }'
}
printf '| case | instructions per request | heap blocks per request |\n|---|---|---|\n'
declare -A per
for case in scope-get hit 304 scope-post post bare-stream stream bare-no-store no-store bare-private private bare-miss miss bare-headers bare-304; do
  a=$(count "$case" 200); b=$(count "$case" 1200)
  per[$case]=$(( (b - a) / 1000 ))
  ha=$(blocks "$case" 200); hb=$(blocks "$case" 1200)
  printf '| %s | %s | %s |\n' "$case" "${per[$case]}" "$(python3 -c "print(round(($hb - $ha) / 1000, 1))")"
done
printf '\nhit / scope-get: %s\n' "$(python3 -c "print(round(${per[hit]}/${per[scope-get]},2))")"
printf '304 / scope-get: %s\n' "$(python3 -c "print(round(${per[304]}/${per[scope-get]},2))")"
printf 'post / scope-post: %s\n' "$(python3 -c "print(round(${per[post]}/${per[scope-post]},2))")"
printf 'stream / bare-stream: %s\n' "$(python3 -c "print(round(${per[stream]}/${per['bare-stream']},2))")"
printf 'no-store / bare-no-store: %s\n' "$(python3 -c "print(round(${per[no-store]}/${per['bare-no-store']},2))")"
printf 'private / bare-private: %s\n' "$(python3 -c "print(round(${per[private]}/${per['bare-private']},2))")"
printf 'miss / bare-miss: %s\n' "$(python3 -c "print(round(${per[miss]}/${per['bare-miss']},2))")"
printf 'hit / bare-headers: %s\n' "$(python3 -c "print(round(${per[hit]}/${per['bare-headers']},2))")"
printf '304 / bare-304: %s\n' "$(python3 -c "print(round(${per[304]}/${per['bare-304']},2))")"
