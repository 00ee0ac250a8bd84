#!/usr/bin/env python3
"""What a running feedrank service serves, by kind: follows the feeds of several users page by
page and reports the share of ads and sponsored posts, and where the first ad lands.

    python3 scripts/feed_mix.py --url http://127.0.0.1:8080 --users 100 --pages 5

Users are the demo world's ids (u_0001, u_0051, ... spread over --population); standard
library only.
"""

import argparse
import collections
import json
import sys
import urllib.parse
import urllib.request


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--population", type=int, default=5000, help="users in the world")
    parser.add_argument("--pages", type=int, default=5)
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args()
    if args.users < 1 or args.pages < 1 or not 1 <= args.limit <= 100:
        parser.error("--users and --pages must be at least 1, --limit from 1 to 100")

    step = max(1, args.population // args.users)
    users = [f"u_{i:04d}" for i in range(1, args.population + 1, step)][: args.users]
    kinds: collections.Counter = collections.Counter()
    first_ad: collections.Counter = collections.Counter()
    for user in users:
        cursor, position, seen_ad = None, 0, False
        for _ in range(args.pages):
            query = {"limit": args.limit}
            if cursor:
                query["cursor"] = cursor
            url = f"{args.url}/v1/users/{urllib.parse.quote(user)}/feed?{urllib.parse.urlencode(query)}"
            with urllib.request.urlopen(url) as response:
                page = json.load(response)
            for item in page["items"]:
                kinds[item["kind"]] += 1
                if item["kind"] == "ad" and not seen_ad:
                    first_ad[position] += 1
                    seen_ad = True
                position += 1
            cursor = page["next_cursor"]
            if not cursor:
                break
        if not seen_ad:
            first_ad["none"] += 1
    total = sum(kinds.values())
    print(f"{len(users)} users, {total} items: {dict(kinds)}")
    print(f"ad share {kinds['ad'] / total:.4f}, sponsored share {kinds['sponsored'] / total:.4f}")
    print(f"position of each user's first ad: {dict(first_ad.most_common())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
