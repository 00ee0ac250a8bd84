#!/usr/bin/env bash
# Evaluation of hashtag recommendations on the hashtag-prefs data set (real Twitter users and
# the hashtags they used; train.csv earlier in time than valid.csv).
#
# 1. Exports train.csv as a model snapshot with embeddings from a factorisation of the
#    user × hashtag matrix (scripts/hashtag_prefs_snapshot.py; numpy).
# 2. Runs `feedrank eval hashtags` on it against valid.csv: hit@10 and MRR@10 of global
#    popularity, cold start (language only), warm (the user's vector), the user's own
#    history, and newcomers onboarded with the user's first hashtags (`--picks`, 3), with and
#    without their neighbours, averaged over the held-out posts.
#
# Usage: scripts/eval_hashtags.sh DATA_DIR [OUT_DIR] [-- extra `feedrank eval hashtags` flags]
#   DATA_DIR           directory holding train.csv and valid.csv
#   OUT_DIR            where the snapshot is written (default target/hashtag-prefs-snapshot)
#   FEEDRANK_BIN=PATH  use this feedrank binary instead of building one
#   DIM=N              embedding dimension (default 32)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 2
fi
data=$1
shift
out=target/hashtag-prefs-snapshot
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
  out=$1
  shift
fi
[ "${1:-}" = "--" ] && shift

for f in train.csv valid.csv; do
  if [ ! -f "$data/$f" ]; then
    echo "error: $data/$f: no such file (DATA_DIR must hold train.csv and valid.csv)" >&2
    exit 1
  fi
done
if ! python3 -c 'import numpy' 2>/dev/null; then
  echo "error: the export needs numpy: python3 -m pip install numpy" >&2
  exit 1
fi

if [ -n "${FEEDRANK_BIN:-}" ]; then
  bin=$FEEDRANK_BIN
else
  cargo build --release --quiet
  bin=${CARGO_TARGET_DIR:-target}/release/feedrank
fi

python3 scripts/hashtag_prefs_snapshot.py "$data" "$out" --dim "${DIM:-32}"
"$bin" eval hashtags --snapshot "$out" --valid "$data/valid.csv" "$@"
