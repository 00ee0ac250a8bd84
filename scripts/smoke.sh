#!/usr/bin/env bash
# Smoke test of the README's run command: start `cargo run --release -- serve` on the bundled
# demo world, wait until ready, check a demo user's feed, an unknown user's feed, a newcomer's
# hashtags and onboarding, a hide through live events, publishing a post (and a 409 for it
# again), an error, and that /metrics counted them,
# report resident memory, stop with SIGTERM and expect a clean exit.
# Usage: scripts/smoke.sh            (port from FEEDRANK_ADDR, default 127.0.0.1:18080)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }

export FEEDRANK_ADDR=${FEEDRANK_ADDR:-127.0.0.1:18080}
base="http://$FEEDRANK_ADDR"
cargo build --release --quiet
log=$(mktemp)
data=$(mktemp -d)
cargo run --release --quiet -- serve --data-dir "$data" >"$log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; rm -rf "$log" "$log.headers" "$log.metrics" "$data"; }
trap cleanup EXIT

started=$(date +%s)
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz")" = 200 ]; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "server exited before becoming ready:"; cat "$log"; exit 1
  fi
  if [ $(( $(date +%s) - started )) -gt 300 ]; then
    echo "not ready after 300 s:"; cat "$log"; exit 1
  fi
  sleep 1
done
echo "ready after $(( $(date +%s) - started )) s"

check_page() { # $1 = user id; expects 20 distinct post ids
  curl -sf "$base/v1/users/$1/feed?limit=20" | python3 -c '
import json, sys
page = json.load(sys.stdin)
ids = [item["post_id"] for item in page["items"]]
assert len(ids) == 20 and len(set(ids)) == 20, page
version = page["model_version"]
print(f"  {sys.argv[1]}: 20 distinct posts from {version}, first {ids[:3]}")
' "$1"
}
demo_user=$(head -n 1 models/demo/users.jsonl | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
check_page "$demo_user"
check_page "brand_new_visitor"
curl -sf "$base/v1/users/brand_new_visitor/hashtags?lang=en" | python3 -c '
import json, sys
page = json.load(sys.stdin)
tags = [h["tag"] for h in page["hashtags"]]
reasons = sorted({h["reason"] for h in page["hashtags"]})
assert len(tags) == 10 and len(set(tags)) == 10, page
print(f"  newcomer hashtags: {tags[:4]}, reasons {reasons}")
'
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'content-type: application/json' \
  -d '{"langs": ["en"], "follows": ["cats", "food"]}' "$base/v1/users/brand_new_visitor")
[ "$code" = 201 ] || { echo "onboarding answered $code, expected 201"; exit 1; }
echo "  onboarding PUT -> 201"
check_page "brand_new_visitor"
first_post=$(curl -sf "$base/v1/users/$demo_user/feed?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["post_id"])')
curl -sf -X POST -H 'content-type: application/json' "$base/v1/events" \
  -d "{\"events\": [{\"user_id\": \"$demo_user\", \"post_id\": \"$first_post\", \"type\": \"hide\", \"ts\": 1737000000}]}" \
  | python3 -c 'import json,sys; o = json.load(sys.stdin); assert o["accepted"] == 1, o'
if curl -sf "$base/v1/users/$demo_user/feed?limit=20" | grep -q "\"$first_post\""; then
  echo "hidden post $first_post came back"; exit 1
fi
echo "  hide of $first_post -> gone from the next feed"
post_body=$(python3 -c '
import json
dim = json.load(open("models/demo/manifest.json"))["dim"]
post = {"id": "smoke_post_1", "author": "smoke_author", "lang": "en", "hashtags": ["cats"],
        "kind": "organic", "created_at": 1737300000,
        "embedding": [((i * 7) % 5 - 2) / 10 for i in range(dim)]}
print(json.dumps({"posts": [post]}))')
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
  -d "$post_body" "$base/v1/posts")
[ "$code" = 201 ] || { echo "publishing answered $code, expected 201"; exit 1; }
curl -sf "$base/v1/posts/smoke_post_1" | python3 -c 'import json,sys; p = json.load(sys.stdin); assert p["published"] is True, p'
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
  -d "$post_body" "$base/v1/posts")
[ "$code" = 409 ] || { echo "publishing again answered $code, expected 409"; exit 1; }
echo "  publish smoke_post_1 -> 201, shown by GET /v1/posts, again -> 409"
curl -sf "$base/v1/users/$demo_user/similar?limit=3" | python3 -c '
import json, sys
page = json.load(sys.stdin)
users = [u["user_id"] for u in page["users"]]
assert len(users) == 3 and sys.argv[1] not in users, page
print(f"  similar users of {sys.argv[1]}: {users}")' "$demo_user"
curl -sf "$base/v1/posts/smoke_post_1/audience?limit=3" | python3 -c '
import json, sys
page = json.load(sys.stdin)
assert page["small_creator"] and page["offer"]["active"] and len(page["users"]) == 3, page
users = [u["user_id"] for u in page["users"]]
print(f"  audience of smoke_post_1 (a new creator): {users}, on offer")'
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/v1/users/nobody_at_all/similar")
[ "$code" = 404 ] || { echo "similar users of an unknown user answered $code, expected 404"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/v1/users/$demo_user/feed?limit=0")
[ "$code" = 400 ] || { echo "limit=0 answered $code, expected 400"; exit 1; }
echo "  limit=0 -> 400"
curl -sf -D "$log.headers" "$base/metrics" -o "$log.metrics"
grep -qi '^content-type: text/plain; version=0.0.4' "$log.headers" \
  || { echo "/metrics content type:"; cat "$log.headers"; exit 1; }
grep -q '^feedrank_http_requests_total{route="/v1/users/{user_id}/feed",method="GET",status="400"} 1$' "$log.metrics" \
  || { echo "/metrics does not count the 400:"; cat "$log.metrics"; exit 1; }
grep -q '^feedrank_posts_published_total 1$' "$log.metrics" \
  || { echo "/metrics does not count the post published"; exit 1; }
echo "  /metrics -> $(grep -c '^feedrank_' "$log.metrics") samples, the 400 and the post counted"
rm -f "$log.headers" "$log.metrics"
echo "resident memory: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)"

kill -TERM "$pid"
if wait "$pid"; then echo "clean shutdown on SIGTERM"; else echo "exit code $? after SIGTERM"; cat "$log"; exit 1; fi
trap - EXIT
rm -rf "$log" "$data"
