#!/usr/bin/env bash
# HTTP load test of `feedrank serve` on a generated world (default 1,000,000 posts), driven by
# oha over loopback at fixed request rates, then flat out, for a bounded time per step.
#
# Prints, per step: target rate, achieved throughput, p50/p90/p99/max latency and errors, plus
# the service's start-up time and resident memory. Requests go to random known users'
# personal feeds (the expensive path: one HNSW search per request).
#
# Usage: scripts/load_test.sh [options]
#   --posts N          posts in the generated world (default 1000000)
#   --users N          users (default 100000; must be at least 10000)
#   --world DIR        where the world is generated and kept for reruns
#                      (default target/load-test/world-<posts>)
#   --rates "R ..."    fixed request rates per second (default "250 500 1000 2000 4000")
#   --duration D       length of each step, oha syntax (default 20s)
#   --connections C    concurrent connections (default 32)
#   --port P           port on 127.0.0.1 (default 18090)
#   --keep-going       after the fixed rates, keep doubling the rate until p99 exceeds 20 ms
#   --events B         then POST /v1/events flat out, B events per batch (fsync on), and
#                      report events/s (default 0: no events step)
#   --live-sources     before the steps, every requested user saves 8 posts and 500 posts
#                      of new creators are published, so the lookalike and audience sources
#                      have work on every request (without it, both find nothing to do)
#   FEEDRANK_BIN=PATH  use this feedrank binary instead of building one
#
# The first run builds the release binary, installs oha with `cargo install` if it is absent
# (a few minutes), generates the world and stores its index (`feedrank snapshot index`), so the
# service loads it instead of building. Later runs reuse all of them.
set -euo pipefail
cd "$(dirname "$0")/.."

posts=1000000
users=100000
world=""
rates="250 500 1000 2000 4000"
duration=20s
connections=32
port=18090
keep_going=0
events=0
live_sources=0
while [ $# -gt 0 ]; do
  case "$1" in
    --posts) posts=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    --world) world=$2; shift 2 ;;
    --rates) rates=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --keep-going) keep_going=1; shift ;;
    --events) events=$2; shift 2 ;;
    --live-sources) live_sources=1; shift ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$users" -lt 10000 ]; then
  echo "--users must be at least 10000: requests pick users u_10000 to u_99999" >&2
  exit 2
fi
world=${world:-target/load-test/world-$posts}

command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
if ! command -v oha >/dev/null; then
  echo "installing oha (cargo install oha --locked)..."
  cargo install oha --locked --quiet
fi
export PATH="$HOME/.cargo/bin:$PATH"

if [ -n "${FEEDRANK_BIN:-}" ]; then
  bin=$FEEDRANK_BIN
else
  cargo build --release --quiet
  bin=${CARGO_TARGET_DIR:-target}/release/feedrank
fi

if [ ! -f "$world/manifest.json" ]; then
  echo "generating a world of $posts posts and $users users in $world..."
  "$bin" demo --out "$world" --posts "$posts" --users "$users" --force
fi
if [ ! -f "$world/posts.index" ]; then
  echo "storing the index of $world (built once, then loaded)..."
  /usr/bin/env time -f "index stored in %e s, peak memory %M KiB" \
    "$bin" snapshot index "$world" 2>&1 | tail -n 5
fi

base="http://127.0.0.1:$port"
log=$(mktemp)
out=$(mktemp -d)
# A fresh write-ahead log for every run, on the checkout's disk (a tmpfs would hide what fsync
# costs).
data=target/load-test/data-$$
rm -rf "$data"
FEEDRANK_LOG_FORMAT=text "$bin" serve --snapshot "$world" --addr "127.0.0.1:$port" \
  --data-dir "$data" >"$log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$log" "$out" "$data"
}
trap cleanup EXIT

started=$(date +%s.%N)
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "server exited before becoming ready:"; cat "$log"; exit 1
  fi
  sleep 0.2
done
ready=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")
rss() { awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' "/proc/$pid/status"; }
echo "ready after $ready s; resident memory $(rss)"

# A regex: `?` escaped.
url="$base/v1/users/u_[1-9][0-9]{4}/feed\\?limit=20"
run() { # $1 = label, $2 = rate (0 = flat out)
  local label=$1 rate=$2 args=()
  [ "$rate" -gt 0 ] && args+=(-q "$rate" --latency-correction)
  oha --no-tui --output-format json -z "$duration" -c "$connections" "${args[@]}" \
    --rand-regex-url "$url" >"$out/$label.json"
}

if [ "$live_sources" = 1 ]; then
  python3 scripts/events_load.py seed "$base" "$world" 8 500
  # The moves just placed make the user index rebuild in the background: measure after it.
  seeded=$(date +%s)
  while curl -s "$base/metrics" | grep -q '^feedrank_user_index_rebuilding 1'; do
    sleep 2
  done
  echo "user index settled $(( $(date +%s) - seeded )) s after seeding: $(curl -s "$base/metrics" \
    | grep -E '^feedrank_(user_index_rebuilds|user_placements) ' | tr '\n' ' ')"
fi

echo "warming up (5 s)..."
oha --no-tui --output-format json -z 5s -c "$connections" --rand-regex-url "$url" >/dev/null

steps=()
for rate in $rates; do
  echo "rate $rate/s for $duration..."
  run "rate-$rate" "$rate"
  steps+=("rate-$rate")
done
if [ "$keep_going" = 1 ]; then
  rate=${rate:-1000}
  while python3 - "$out/rate-$rate.json" <<'EOF'
import json, sys
p99 = json.load(open(sys.argv[1]))["latencyPercentiles"]["p99"]
sys.exit(0 if p99 is not None and p99 * 1000 <= 20 else 1)
EOF
  do
    rate=$((rate * 2))
    echo "rate $rate/s for $duration..."
    run "rate-$rate" "$rate"
    steps+=("rate-$rate")
  done
fi
echo "flat out with $connections connections for $duration..."
run "max" 0
steps+=("max")

if [ "$events" -gt 0 ]; then
  python3 scripts/events_load.py body "$world/posts.jsonl" "$events" >"$out/events.json"
  echo "POST /v1/events flat out, $events events per batch, $connections connections for $duration..."
  oha --no-tui --output-format json -z "$duration" -c "$connections" -m POST \
    -H 'content-type: application/json' -D "$out/events.json" "$base/v1/events" \
    >"$out/events-run.json"
fi

python3 - "$out" "$connections" "$duration" "${steps[@]}" <<'EOF'
import json, os, sys
out, connections, duration, steps = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
print(f"\n{connections} connections, {duration} per step, random known users, limit=20\n")
print("| target rate/s | achieved rate/s | p50 ms | p90 ms | p99 ms | max ms | errors |")
print("|---|---|---|---|---|---|---|")
crossed = None
for step in steps:
    r = json.load(open(os.path.join(out, step + ".json")))
    s, p = r["summary"], r["latencyPercentiles"]
    codes = r.get("statusCodeDistribution", {})
    errors = sum(n for code, n in codes.items() if code != "200")
    errors += sum(r.get("errorDistribution", {}).values())
    ms = lambda v: "-" if v is None else f"{v * 1000:.2f}"
    target = "max" if step == "max" else step.split("-")[1]
    print(f"| {target} | {s['requestsPerSec']:.0f} | {ms(p['p50'])} | {ms(p['p90'])} "
          f"| {ms(p['p99'])} | {ms(s['slowest'])} | {errors} |")
    if errors:
        print(f"  (status codes: {codes}, errors: {r.get('errorDistribution', {})})")
    if crossed is None and step != "max" and p["p99"] is not None and p["p99"] > 0.020:
        crossed = target
print()
print("p99 first above 20 ms at", f"{crossed}/s" if crossed else "none of the fixed rates")
EOF
if [ "$events" -gt 0 ]; then
  python3 scripts/events_load.py report "$out/events-run.json" "$events" "$connections" "$duration"
fi
echo "resident memory after the run: $(rss)"
kill -TERM "$pid"
wait "$pid" || { echo "server exit code $? after SIGTERM"; cat "$log"; exit 1; }
trap - EXIT
rm -rf "$log" "$out" "$data"
