#!/usr/bin/env python3
"""Helpers of `scripts/load_test.sh --events B` (standard library only).

    events_load.py body POSTS_JSONL B        prints one POST /v1/events body: B impressions of
                                             the first B posts, by 1,000 users in turn
    events_load.py report OHA_JSON B C D     prints the step's events/s and latency
"""

import json
import sys


def body(posts_jsonl, n):
    ids = []
    with open(posts_jsonl) as f:
        for line in f:
            ids.append(json.loads(line)["id"])
            if len(ids) >= n:
                break
    events = [
        {"user_id": f"load-{i % 1000}", "post_id": ids[i % len(ids)], "type": "impression",
         "ts": 1737000000}
        for i in range(n)
    ]
    print(json.dumps({"events": events}))


def report(oha_json, batch, connections, duration):
    r = json.load(open(oha_json))
    s, p = r["summary"], r["latencyPercentiles"]
    codes = r.get("statusCodeDistribution", {})
    errors = sum(n for code, n in codes.items() if code != "200")
    errors += sum(r.get("errorDistribution", {}).values())

    def ms(v):
        return "-" if v is None else f"{v * 1000:.2f}"

    print(f"\nPOST /v1/events, {batch} events per batch, {connections} connections, {duration}, "
          "fsync on")
    print(f"batches/s {s['requestsPerSec']:.0f}, events/s {s['requestsPerSec'] * batch:.0f}, "
          f"p50 {ms(p['p50'])} ms, p90 {ms(p['p90'])} ms, p99 {ms(p['p99'])} ms, "
          f"errors {errors}")
    if errors:
        print(f"  (status codes: {codes}, errors: {r.get('errorDistribution', {})})")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "body":
        body(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 6 and sys.argv[1] == "report":
        report(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    else:
        sys.exit(__doc__)
