#!/usr/bin/env bash
# Load time and memory across hot reloads: starts `feedrank serve` on MODELS_DIR/NAME, then
# reloads the same snapshot N times through the admin API, printing the time of each and the
# resident (VmRSS) and peak (VmHWM) memory after it, and again after 300 feed requests (the
# allocator returns freed pages as it works).
# Usage: scripts/reload_memory.sh MODELS_DIR NAME [N]     (FEEDRANK_BIN: the binary to run)
set -euo pipefail
models=${1:?models directory}
name=${2:?snapshot directory name inside it}
n=${3:-4}
bin=${FEEDRANK_BIN:-target/release/feedrank}
addr=127.0.0.1:18095
data=$(mktemp -d)
export FEEDRANK_ADMIN_TOKEN=reload-memory
start=$(date +%s.%N)
"$bin" serve --snapshot "$models/$name" --addr "$addr" --data-dir "$data" >"$data/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$data"' EXIT
until curl -sf "http://$addr/readyz" >/dev/null; do
  kill -0 $pid || { cat "$data/serve.log"; exit 1; }
  sleep 0.2
done
echo "ready after $(echo "$(date +%s.%N) - $start" | bc) s"
mem() { awk '/VmRSS|VmHWM/ {printf "%s %.0f MiB  ", $1, $2/1024}' /proc/$pid/status; echo; }
mem
for i in $(seq 1 "$n"); do
  t0=$(date +%s.%N)
  out=$(curl -s -X POST "http://$addr/admin/snapshots/reload" \
    -H "Authorization: Bearer $FEEDRANK_ADMIN_TOKEN" -d "{\"path\": \"$name\"}")
  echo "reload $i: $(echo "$(date +%s.%N) - $t0" | bc) s; $out" | cut -c1-200
  sleep 2
  mem
  for j in $(seq 1 300); do
    curl -s -o /dev/null "http://$addr/v1/users/u_$(printf %04d $((j % 5000 + 1)))/feed"
  done
  echo -n "after 300 feed requests: "; mem
done
