#!/usr/bin/env python3
"""Helpers of `scripts/load_test.sh --events B` (standard library only).

    events_load.py body POSTS_JSONL B        prints one POST /v1/events body: B impressions of
                                             the first B posts, by 1,000 users in turn
    events_load.py report OHA_JSON B C D     prints the step's events/s and latency
    events_load.py seed BASE_URL WORLD S P   turns the live sources on: every user u_10000 to
                                             u_99999 saves S random organic posts (POST
                                             /v1/events), then P posts of new creators are
                                             published (POST /v1/posts), each with the
                                             embedding of a random snapshot post
"""

import json
import random
import struct
import sys
import urllib.request


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


def post(url, payload):
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return response.status, json.load(response)


def npy_rows(path):
    """The shape and a row reader of a little-endian float32 C-order .npy file."""
    f = open(path, "rb")
    assert f.read(6) == b"\x93NUMPY", f"{path}: not a .npy file"
    major = f.read(2)[0]
    size = struct.unpack("<H" if major == 1 else "<I", f.read(2 if major == 1 else 4))[0]
    header = f.read(size).decode("latin1")
    assert "'<f4'" in header and "False" in header, f"{path}: not float32 C order"
    shape = tuple(int(x) for x in header.split("(")[1].split(")")[0].split(",") if x.strip())
    start = f.tell()

    def row(i):
        f.seek(start + i * shape[1] * 4)
        return list(struct.unpack(f"<{shape[1]}f", f.read(shape[1] * 4)))

    return shape, row


def seed(base, world, saves, publish):
    rng = random.Random(7)
    organic = []
    with open(f"{world}/posts.jsonl") as f:
        for row, line in enumerate(f):
            p = json.loads(line)
            if p["kind"] == "organic":
                organic.append((row, p))
    users = [f"u_{i}" for i in range(10000, 100000)]
    batch, sent = [], 0
    for user in users:
        for _ in range(saves):
            _, p = organic[rng.randrange(len(organic))]
            batch.append({"user_id": user, "post_id": p["id"], "type": "save", "ts": 1737000000})
            if len(batch) == 1000:
                status, answer = post(f"{base}/v1/events", {"events": batch})
                assert status == 200 and not answer.get("rejected"), answer
                sent += len(batch)
                batch = []
    if batch:
        post(f"{base}/v1/events", {"events": batch})
        sent += len(batch)
    _, row_of = npy_rows(f"{world}/posts.npy")
    published = 0
    for start in range(0, publish, 100):
        posts = []
        for i in range(start, min(start + 100, publish)):
            row, p = organic[rng.randrange(len(organic))]
            posts.append({
                "id": f"load-new-{i}", "author": f"load-creator-{i}", "lang": p["lang"],
                "hashtags": p["hashtags"], "kind": "organic", "created_at": p["created_at"],
                "embedding": row_of(row),
            })
        status, answer = post(f"{base}/v1/posts", {"posts": posts})
        assert status == 201, answer
        published += len(answer["published"])
    print(f"live sources on: {sent} saves by {len(users)} users, {published} posts published")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "body":
        body(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 6 and sys.argv[1] == "report":
        report(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif len(sys.argv) == 6 and sys.argv[1] == "seed":
        seed(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(__doc__)
