#!/usr/bin/env python3
"""Export a feedrank model snapshot from numpy arrays.

A snapshot is a directory that feedrank validates and serves:

    manifest.json     format version, model version, dim, metric, sha256 of every data file
    posts.npy         float32 [n_posts, dim], C order, little endian
    posts.jsonl       n_posts lines; line i describes row i of posts.npy
    users.npy/.jsonl  optional pair, same layout
    hashtags.npy/.jsonl  optional pair, same layout

Use it from your own export code:

    from write_snapshot import write_snapshot
    write_snapshot("snapshots/2025-01-19.1", posts, post_vectors,
                   model_version="2025-01-19.1", metric="cosine")

or run it to write a tiny random snapshot (a starting point, and a smoke test of the loader):

    python3 scripts/write_snapshot.py OUT_DIR

Records are plain dicts, exactly as they appear in the JSONL files:

    post     {"id", "author", "lang", "hashtags", "kind", "created_at", "stats"}
    user     {"id", "langs", "created_at", "follows"}
    hashtag  {"tag", "display"}            ("display" is optional)

`created_at` is in Unix seconds; `stats` counters are non-negative integers (missing ones are
0); hashtags must be normalised (see `normalise_hashtag`). Only numpy and the standard library
are needed. This script checks the common mistakes early, but feedrank's loader is the
authority: it rejects anything that breaks the contract and says which file, line and field.
"""

import datetime
import hashlib
import json
import os
import sys
import unicodedata

import numpy as np

FORMAT_VERSION = 1
METRICS = ("cosine", "dot")


def normalise_hashtag(tag):
    """The form feedrank expects: NFKC, no surrounding spaces or leading '#', lower case."""
    # NFKC first so that a full-width '＃' becomes '#' before it is stripped, and again at the
    # end because lower-casing can leave a string that is not NFKC.
    bare = unicodedata.normalize("NFKC", tag).strip().lstrip("#")
    return unicodedata.normalize("NFKC", bare.lower())


def _json_default(value):
    # numpy integers (e.g. counters taken from an array) become plain ints. numpy floats are
    # converted too, so that a fractional counter reaches the loader and is reported there.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_jsonl(path, records):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            # One object per line, no blank lines: line i must describe row i of the matrix.
            line = json.dumps(
                record,
                ensure_ascii=False,
                separators=(",", ":"),
                allow_nan=False,
                default=_json_default,
            )
            f.write(line)
            f.write("\n")


def _write_matrix(path, name, matrix, rows, dim, metric):
    # '<f4' pins float32 little endian; ascontiguousarray gives C order.
    array = np.ascontiguousarray(np.asarray(matrix), dtype="<f4")
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {array.shape}")
    if array.shape != (rows, dim):
        raise ValueError(f"{name}: shape {array.shape}, expected ({rows}, {dim})")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or infinite values (after conversion to float32)")
    if metric == "cosine" and rows and (np.abs(array).sum(axis=1) == 0).any():
        raise ValueError(f"{name}: zero vectors have no direction under the cosine metric")
    np.save(path, array, allow_pickle=False)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_snapshot(
    out_dir,
    posts,
    post_vectors,
    users=None,
    user_vectors=None,
    hashtags=None,
    hashtag_vectors=None,
    model_version=None,
    metric="cosine",
    scoring=None,
    created_at=None,
):
    """Writes a snapshot into `out_dir` (created if needed) and returns the manifest dict.

    posts, users, hashtags: lists of record dicts; *_vectors: arrays of shape [len, dim]
    (any float dtype; written as float32). users/hashtags and their vectors come as pairs:
    pass both or neither. model_version: a non-empty string naming the model.
    metric: "cosine" (feedrank normalises vectors on load) or "dot" (used as given).
    scoring: optional dict of scoring overrides, stored as is. created_at: an RFC 3339 UTC
    timestamp string; defaults to now.
    """
    if not model_version:
        raise ValueError("model_version must be a non-empty string")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if not posts:
        raise ValueError("a snapshot needs at least one post")
    post_vectors = np.asarray(post_vectors)
    if post_vectors.ndim != 2:
        raise ValueError(f"post_vectors: expected a 2-D array, got shape {post_vectors.shape}")
    dim = int(post_vectors.shape[1])
    if created_at is None:
        now = datetime.datetime.now(datetime.timezone.utc)
        created_at = now.strftime("%Y-%m-%dT%H:%M:%SZ")

    os.makedirs(out_dir, exist_ok=True)
    # An old manifest would describe files about to be replaced: remove it first, and write
    # the new one last, so that an interrupted export never looks like a valid snapshot.
    manifest_path = os.path.join(out_dir, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)

    files = {}
    pairs = [
        ("posts", posts, post_vectors),
        ("users", users, user_vectors),
        ("hashtags", hashtags, hashtag_vectors),
    ]
    for stem, records, vectors in pairs:
        npy_path = os.path.join(out_dir, f"{stem}.npy")
        jsonl_path = os.path.join(out_dir, f"{stem}.jsonl")
        if records is None and vectors is None:
            # A stale optional pair from an earlier export would be rejected as unlisted.
            for path in (npy_path, jsonl_path):
                if os.path.exists(path):
                    os.remove(path)
            continue
        if records is None or vectors is None:
            raise ValueError(f"{stem} and {stem[:-1]}_vectors come as a pair: pass both or neither")
        records = list(records)
        _write_matrix(npy_path, f"{stem}.npy", vectors, len(records), dim, metric)
        _write_jsonl(jsonl_path, records)
        for path in (npy_path, jsonl_path):
            files[os.path.basename(path)] = _sha256(path)

    manifest = {
        "format_version": FORMAT_VERSION,
        "model_version": model_version,
        "created_at": created_at,
        "dim": dim,
        "metric": metric,
        "files": files,
        "scoring": scoring or {},
    }
    tmp_path = manifest_path + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp_path, manifest_path)
    return manifest


def _demo(out_dir, n_posts=200, n_users=20, dim=32, seed=7):
    """A tiny random snapshot: random vectors, plausible records."""
    rng = np.random.default_rng(seed)
    vocab = {
        "cats": {"en": "#cats", "zh": "#猫"},
        "travel": {"en": "#travel", "es": "#viajes"},
        "cooking": {"en": "#cooking"},
        "tiktokrefugee": {},
        "猫": {"zh": "#猫", "ja": "#ねこ"},
    }
    tags = list(vocab)
    langs = ["en", "zh", "es", "mixed", "pt-br"]
    now = int(datetime.datetime(2025, 1, 19, tzinfo=datetime.timezone.utc).timestamp())

    posts = []
    for i in range(n_posts):
        picked = rng.choice(len(tags), size=int(rng.integers(0, 3)), replace=False)
        views = int(rng.integers(0, 10_000))
        posts.append({
            "id": f"p_{i:05d}",
            "author": f"a_{int(rng.integers(0, 40))}",
            "lang": langs[int(rng.integers(0, len(langs)))],
            "hashtags": [tags[j] for j in picked],
            "kind": "ad" if i % 25 == 0 else ("sponsored" if i % 40 == 1 else "organic"),
            "created_at": now - int(rng.integers(0, 14 * 86_400)),
            # numpy integers are fine: they are written as JSON integers.
            "stats": {"views": views, "likes": rng.integers(0, views // 10 + 1)},
        })
    users = [
        {
            "id": f"u_{i:04d}",
            "langs": [langs[int(rng.integers(0, 3))]],
            "created_at": now - int(rng.integers(0, 365 * 86_400)),
            "follows": [tags[j] for j in rng.choice(len(tags), size=2, replace=False)],
        }
        for i in range(n_users)
    ]
    hashtags = [{"tag": t, "display": d} if d else {"tag": t} for t, d in vocab.items()]
    return write_snapshot(
        out_dir,
        posts,
        rng.standard_normal((n_posts, dim)),
        users=users,
        user_vectors=rng.standard_normal((n_users, dim)),
        hashtags=hashtags,
        hashtag_vectors=rng.standard_normal((len(hashtags), dim)),
        model_version="demo-1",
        metric="cosine",
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    manifest = _demo(sys.argv[1])
    print(f"wrote {sys.argv[1]}: dim {manifest['dim']}, files {', '.join(manifest['files'])}")
