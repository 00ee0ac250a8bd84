#!/usr/bin/env python3
"""Export the hashtag-prefs data set as a feedrank model snapshot, with embeddings made by
factorising the user × hashtag co-occurrence matrix.

    python3 scripts/hashtag_prefs_snapshot.py DATA_DIR OUT_DIR [--dim 32] [--seed 7]

DATA_DIR holds the data set's `train.csv`: tab-separated lines `text<TAB>user_id<TAB>tag...`
(tags in lower case without `#`). Only `train.csv` is read: `valid.csv` is the held-out split
that the evaluation measures on, so nothing from it may reach the snapshot.

Embeddings
----------
Users and hashtags are embedded together, so that a user's vector points at the hashtags that
user is likely to use:

1. A user × hashtag matrix A of weighted counts: A[u, t] = log1p(c) · idf(t), where c is the
   number of training lines in which user u used hashtag t and idf(t) = log(1 + U / df(t)),
   with U the number of users and df(t) the number of users who used t. log1p dampens a user
   who repeats one hashtag on every line, so that the rest of their history still counts; idf
   weighs down the hashtags everybody uses (#rt, #ff, #teamfollowback), which say little about
   a user's interests, and its `1 +` keeps every weight positive.
2. A truncated SVD of rank `dim`, A ≈ U·S·Vᵀ, computed with numpy only by a randomized SVD:
   a seeded Gaussian projection of A (`dim` + 10 columns), 4 power iterations with a QR
   after every product, then an exact SVD of the small projected matrix. The signs of the
   singular vectors are fixed (largest component of each column of V positive), so that the
   result depends only on the data and the seed.
3. Hashtag vectors V·S^½ and user vectors U·S^½: a user's vector · a hashtag's vector
   approximates A[u, t]. The snapshot's metric is `cosine` (feedrank normalises rows on load).

Under cosine a zero vector has no direction and is rejected. A hashtag whose vector vanishes
(numerically zero: its users lie outside the rank-`dim` subspace) gets the mean of its users'
vectors; a user whose vector vanishes gets the mean of their hashtags' vectors, or, with no
hashtag at all, the mean of all users' vectors. The export fails if a row is still zero.

Parameters: --dim (rank of the factorisation, default 32) and --seed (the random projection,
default 7). The same data, dim and seed give the same snapshot, apart from the manifest's
`created_at`.

Records
-------
- hashtags.jsonl: every hashtag of train.csv, normalised (`normalise_hashtag`); empty ones,
  ones longer than 128 bytes and ones with whitespace or control characters are dropped, and a
  line's repeated hashtags are counted once. Display `#tag` in English.
- posts.jsonl: one post per training line that keeps at least one hashtag: id `t000001` (the
  line number in train.csv), author the user id, language `en`, kind `organic`, stats empty
  (unknown). The data set has no timestamps (its tweets are from February 2013), so lines are
  spaced one second apart in file order from 2013-02-01T00:00:00Z. A post's vector is the
  normalised mean of its hashtags' (normalised) vectors.
- users.jsonl: every user of train.csv, language `en`, created at the time of their first
  post, and no follows: a user's history is carried by their vector, and feedrank's
  recommender leaves out the hashtags a user follows, whereas the hashtags a user used before
  are the ones they are most likely to use again.
"""

import argparse
import collections
import os
import sys
import time
import unicodedata

import numpy as np

from write_snapshot import normalise_hashtag, write_snapshot

MAX_TAG_BYTES = 128
MAX_ID_BYTES = 64
# 2013-02-01T00:00:00Z: the data set's tweets are from February 2013 but carry no timestamps.
EPOCH = 1359676800
OVERSAMPLING = 10
POWER_ITERATIONS = 4
# A vector counts as vanished below this share of the largest norm of its kind.
VANISHED = 1e-9


class ExportError(Exception):
    """A problem with the input or the result, reported as one line without a traceback."""


def clean_tag(raw):
    """The normalised hashtag, or None if it is unusable (empty, too long, inner whitespace)."""
    tag = normalise_hashtag(raw)
    if not tag or len(tag.encode("utf-8")) > MAX_TAG_BYTES:
        return None
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in tag):
        return None
    if normalise_hashtag(tag) != tag:
        return None
    return tag


def read_lines(path):
    """Yields (line_number, user_id, tags) for each line of a data set file, tags cleaned and
    deduplicated in order of appearance. Raises ExportError naming the file and line."""
    if not os.path.isfile(path):
        raise ExportError(f"{path}: no such file")
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise ExportError(f"{path}:{number}: not valid UTF-8 ({e.reason})") from None
            fields = line.split("\t")
            if len(fields) < 2:
                raise ExportError(
                    f"{path}:{number}: expected `text<TAB>user_id<TAB>tag...`, found no tab"
                )
            user = fields[1].strip()
            if not user:
                raise ExportError(f"{path}:{number}: empty user id (second field)")
            if len(user.encode("utf-8")) > MAX_ID_BYTES:
                raise ExportError(
                    f"{path}:{number}: user id is longer than {MAX_ID_BYTES} bytes"
                )
            tags = []
            for raw_tag in fields[2:]:
                tag = clean_tag(raw_tag)
                if tag is not None and tag not in tags:
                    tags.append(tag)
            yield number, user, tags


def weight_matrix(lines, users, tags):
    """The user × hashtag matrix of log1p(count) · idf as COO arrays (rows, cols, values)."""
    user_index = {u: i for i, u in enumerate(users)}
    tag_index = {t: j for j, t in enumerate(tags)}
    counts = collections.Counter()
    for _, user, line_tags in lines:
        for tag in line_tags:
            counts[user_index[user], tag_index[tag]] += 1
    cells = sorted(counts)
    rows = np.array([r for r, _ in cells], dtype=np.int64)
    cols = np.array([c for _, c in cells], dtype=np.int64)
    count = np.array([counts[cell] for cell in cells], dtype=np.float64)
    df = np.bincount(cols, minlength=len(tags)).astype(np.float64)
    idf = np.log1p(len(users) / df)
    return rows, cols, np.log1p(count) * idf[cols]


def _product(rows, cols, values, n_rows, x):
    """A @ x for the sparse A given by (rows, cols, values) with n_rows rows."""
    out = np.zeros((n_rows, x.shape[1]))
    np.add.at(out, rows, values[:, None] * x[cols])
    return out


def randomized_svd(coo, shape, rank, seed):
    """The rank-`rank` truncated SVD (U, S, V) of the sparse matrix `coo` = (rows, cols, values)
    of `shape`, by random projection, power iterations and QR."""
    rows, cols, values = coo
    n_rows, n_cols = shape
    width = min(rank + OVERSAMPLING, n_rows, n_cols)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(_product(rows, cols, values, n_rows, rng.standard_normal((n_cols, width))))
    for _ in range(POWER_ITERATIONS):
        z, _ = np.linalg.qr(_product(cols, rows, values, n_cols, q))
        q, _ = np.linalg.qr(_product(rows, cols, values, n_rows, z))
    # Bᵀ = Aᵀ·Q, so B = Qᵀ·A = (Aᵀ·Q)ᵀ, whose SVD gives A's.
    b = _product(cols, rows, values, n_cols, q).T
    u_small, s, vt = np.linalg.svd(b, full_matrices=False)
    u = q @ u_small[:, :rank]
    v = vt[:rank].T
    s = s[:rank]
    # Fix the signs: the largest component of each column of V is positive.
    signs = np.sign(v[np.abs(v).argmax(axis=0), np.arange(v.shape[1])])
    signs[signs == 0] = 1
    return u * signs, s, v * signs


def _vanished(vectors):
    norms = np.linalg.norm(vectors, axis=1)
    return norms <= VANISHED * max(norms.max(), np.finfo(np.float64).tiny)


def _unit(vectors):
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1)


def embed(lines, users, tags, dim, seed):
    """User and hashtag vectors (float64) by factorising the weighted co-occurrence matrix."""
    if not 1 <= dim < min(len(users), len(tags)):
        raise ExportError(
            f"--dim {dim}: must be at least 1 and less than both the number of users "
            f"({len(users)}) and of hashtags ({len(tags)})"
        )
    rows, cols, values = weight_matrix(lines, users, tags)
    u, s, v = randomized_svd((rows, cols, values), (len(users), len(tags)), dim, seed)
    root = np.sqrt(s)
    user_vectors, tag_vectors = u * root, v * root

    # Fallbacks for rows with no direction (see the module docstring).
    lost_tags = np.flatnonzero(_vanished(tag_vectors))
    for j in lost_tags:
        tag_vectors[j] = user_vectors[rows[cols == j]].mean(axis=0)
    lost_users = np.flatnonzero(_vanished(user_vectors))
    for i in lost_users:
        own = cols[rows == i]
        source = tag_vectors[own] if own.size else user_vectors
        user_vectors[i] = source.mean(axis=0)
    for name, vectors, names in (("hashtag", tag_vectors, tags), ("user", user_vectors, users)):
        zero = np.flatnonzero(np.linalg.norm(vectors, axis=1) == 0)
        if zero.size:
            raise ExportError(
                f"{len(zero)} {name} vector(s) are zero even after the fallback, e.g. "
                f"{names[zero[0]]!r}: try another --dim or --seed"
            )
    return user_vectors, tag_vectors, len(lost_users), len(lost_tags)


def build_records(lines, users, tags, user_vectors, tag_vectors):
    """(posts, post_vectors, user_records, hashtag_records) for the snapshot."""
    tag_index = {t: j for j, t in enumerate(tags)}
    user_index = {u: i for i, u in enumerate(users)}
    unit_tags = _unit(tag_vectors)
    posts, post_vectors, first_post = [], [], {}
    for number, user, line_tags in lines:
        if not line_tags:
            continue
        created_at = EPOCH + number - 1
        first_post.setdefault(user, created_at)
        posts.append({
            "id": f"t{number:06d}",
            "author": user,
            "lang": "en",
            "hashtags": line_tags,
            "kind": "organic",
            "created_at": created_at,
            "stats": {},
        })
        mean = unit_tags[[tag_index[t] for t in line_tags]].mean(axis=0)
        if not np.linalg.norm(mean) > 0:
            # Opposite hashtags can cancel out: the author's taste stands in.
            mean = user_vectors[user_index[user]]
        post_vectors.append(mean)
    post_vectors = _unit(np.array(post_vectors))
    user_records = [
        {"id": u, "langs": ["en"], "created_at": first_post.get(u, EPOCH), "follows": []}
        for u in users
    ]
    hashtag_records = [{"tag": t, "display": {"en": "#" + t}} for t in tags]
    return posts, post_vectors, user_records, hashtag_records


def load(data_dir):
    """(lines, users, tags) of DATA_DIR/train.csv; users and tags in order of first appearance."""
    path = os.path.join(data_dir, "train.csv")
    lines = list(read_lines(path))
    users = list(dict.fromkeys(user for _, user, _ in lines))
    tags = list(dict.fromkeys(tag for _, _, line_tags in lines for tag in line_tags))
    if not tags:
        raise ExportError(f"{path}: no usable hashtag")
    return lines, users, tags


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", metavar="DATA_DIR", help="directory holding train.csv")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="snapshot directory to write")
    parser.add_argument("--dim", type=int, default=32, help="embedding dimension (default 32)")
    parser.add_argument("--seed", type=int, default=7, help="random projection seed (default 7)")
    args = parser.parse_args()

    started = time.monotonic()
    try:
        lines, users, tags = load(args.data_dir)
        user_vectors, tag_vectors, lost_users, lost_tags = embed(
            lines, users, tags, args.dim, args.seed
        )
        posts, post_vectors, user_records, hashtag_records = build_records(
            lines, users, tags, user_vectors, tag_vectors
        )
        write_snapshot(
            args.out_dir,
            posts,
            post_vectors,
            users=user_records,
            user_vectors=user_vectors,
            hashtags=hashtag_records,
            hashtag_vectors=tag_vectors,
            model_version=f"hashtag-prefs-{args.dim}d",
            metric="cosine",
        )
    except (ExportError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    fallbacks = f", fallback vectors: {lost_users} users, {lost_tags} hashtags"
    print(
        f"wrote {args.out_dir}: hashtag-prefs-{args.dim}d, {len(posts)} posts, {len(users)} users, "
        f"{len(tags)} hashtags, dim {args.dim}{fallbacks if lost_users or lost_tags else ''}, "
        f"{time.monotonic() - started:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
