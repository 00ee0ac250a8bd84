#!/usr/bin/env python3
"""Side-by-side ANN benchmark: feedrank's retrieval against hnswlib and faiss.

The same base vectors, queries and ground truth go through

  - feedrank (`feedrank bench ann --json`): its flat HNSW search (what the service uses),
    hnsw_rs's own search of the same graph, and the exact scan;
  - hnswlib (space 'ip') and faiss (IndexHNSWFlat, inner product),

all with M = 16, ef_construction = 200, the same ef sweep and the same measuring scheme: the
graph built on every core (--build-threads), then one query per call on one thread, each run
after an untimed warm-up of up to 100 queries, timing every query in --passes passes and
keeping its fastest (other tenants of a shared machine only ever add time); runs for k = 10
and k = 200 results, with the beam max(ef, k); recall@j = |first j returned ∩ first j of the
exact top-200| / j.

Datasets:
  clustered       n unit vectors from --clusters Gaussian clusters, queries from the same
                  clusters (numpy, seeded)
  fashion-mnist   the Debian package dataset-fashion-mnist (installed with apt-get if absent):
                  60,000 training images as base, the test images as queries, rows normalised

The exact top-200 by inner product (numpy) is the one truth every engine is scored against.
hnswlib and faiss are installed with pip into target/bench-peers-venv (created on first use,
then reused) and the script runs itself inside it. Each Python engine runs in its own process,
so that its memory (growth of resident memory across the build) is its own.

Examples (from the repository root):
  python3 scripts/bench_peers.py --dataset clustered --n 50000 --queries 200
  python3 scripts/bench_peers.py --dataset fashion-mnist --queries 1000 --out data/fmnist
"""

import argparse
import gzip
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / "target" / "bench-peers-venv"
# Versions this script was run with; pip resolves them on Python 3.11 (hnswlib builds from
# source, which needs a C++ compiler).
PINS = ("numpy==2.4.6", "hnswlib==0.8.0", "faiss-cpu==1.15.1")
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_TRAIN = "train-images-idx3-ubyte"
FASHION_TEST = "t10k-images-idx3-ubyte"

M = 16
EF_CONSTRUCTION = 200
RECALL_KS = (10, 100, 200)
TRUTH_K = max(RECALL_KS)
REQUESTED_KS = (min(RECALL_KS), max(RECALL_KS))
WARMUP_QUERIES = 100
# Equal-recall targets: (k requested, recall cut-off, target).
TARGETS = ((200, 200, 0.95), (10, 10, 0.99))
PEERS = ("hnswlib", "faiss")
# Finer than doubling, so that each engine's cheapest beam reaching a recall target is found
# within about 1.5× of where it really lies.
DEFAULT_EFS = "32,48,64,96,128,192,256,384,512"


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", choices=("clustered", "fashion-mnist"), default="clustered")
    p.add_argument("--n", type=int, default=200_000, help="clustered: base vectors (200000)")
    p.add_argument("--dim", type=int, default=64, help="clustered: dimension (64)")
    p.add_argument("--clusters", type=int, default=1000, help="clustered: clusters (1000)")
    p.add_argument(
        "--spread",
        type=float,
        default=1.0,
        help="clustered: expected norm of the noise around a unit centre (1.0)",
    )
    p.add_argument(
        "--queries",
        type=int,
        default=None,
        help="queries (clustered: 1000; fashion-mnist: the first N test images, default all 10000)",
    )
    p.add_argument("--seed", type=int, default=42, help="clustered: random seed (42)")
    p.add_argument(
        "--ef",
        default=DEFAULT_EFS,
        help=f"search beams to sweep, comma-separated ({DEFAULT_EFS}); the equal-recall "
        "comparison can only be as fine as this sweep",
    )
    p.add_argument(
        "--build-threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads every engine builds its graph on (default: all cores)",
    )
    p.add_argument(
        "--exact-queries",
        type=int,
        default=None,
        help="run feedrank's exact scan on only the first N queries (default all)",
    )
    p.add_argument(
        "--passes",
        type=int,
        default=3,
        help="timed passes over the queries per run; each query counts its fastest (3)",
    )
    p.add_argument(
        "--feedrank-engines",
        default="flat,hnsw_rs,exact",
        help="feedrank engines to run, comma-separated (flat,hnsw_rs,exact)",
    )
    p.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="Python engines to run, comma-separated (hnswlib,faiss)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for base.npy, queries.npy and truth.npy, kept and reused by reruns "
        "with the same dataset settings (default: a temporary directory)",
    )
    p.add_argument(
        "--feedrank-bin",
        type=Path,
        default=None,
        help="a built feedrank binary (default: `cargo run --release`)",
    )
    # Internal: run one Python engine on a prepared data directory and print JSON lines.
    p.add_argument("--run-peer", choices=PEERS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.efs = sorted({int(v) for v in args.ef.split(",")})
    except ValueError:
        p.error(f"--ef: expected comma-separated integers, got {args.ef!r}")
    if not args.efs or min(args.efs) <= 0:
        p.error("--ef: values must be positive")
    args.peer_list = [v for v in args.peers.split(",") if v]
    for peer in args.peer_list:
        if peer not in PEERS:
            p.error(f"--peers: unknown engine {peer!r} (known: {', '.join(PEERS)})")
    for name in ("n", "dim", "clusters", "queries", "build_threads", "exact_queries",
                 "passes"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            p.error(f"--{name.replace('_', '-')}: must be positive")
    if args.spread < 0:
        p.error("--spread: must be non-negative")
    return args


# ---------------------------------------------------------------------------------------------
# The virtual environment


def in_venv():
    return Path(sys.prefix).resolve() == VENV.resolve()


def ensure_venv_and_reexec():
    """Creates the venv with the pinned engines if needed and runs this script inside it."""
    python = VENV / "bin" / "python"
    marker = VENV / "bench-peers-pins.txt"
    if not python.exists():
        print(f"creating {VENV.relative_to(REPO)}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if not marker.exists() or marker.read_text() != "\n".join(PINS):
        print(f"installing {' '.join(PINS)} into the venv", file=sys.stderr)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PINS], check=True)
        marker.write_text("\n".join(PINS))
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


# ---------------------------------------------------------------------------------------------
# Data


def normalise_rows(x, what):
    import numpy as np

    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = np.flatnonzero(norms[:, 0] == 0)
    if zero.size:
        sys.exit(f"error: {what}: row {zero[0]} is zero and has no direction for cosine")
    return (x / norms).astype(np.float32)


def clustered(args):
    """Unit vectors around random unit centres, as feedrank's `index::synthetic` draws them:
    noise of expected norm `spread` added to a centre, then normalised."""
    import numpy as np

    rng = np.random.default_rng(args.seed)
    centres = normalise_rows(rng.standard_normal((args.clusters, args.dim)), "centres")
    sigma = args.spread / np.sqrt(args.dim)

    def draw(count):
        out = np.empty((count, args.dim), np.float32)
        # In blocks, so that a million points never need a float64 copy of the whole set.
        for start in range(0, count, 100_000):
            stop = min(start + 100_000, count)
            labels = rng.integers(0, args.clusters, stop - start)
            noise = rng.standard_normal((stop - start, args.dim))
            out[start:stop] = normalise_rows(centres[labels] + sigma * noise, "clustered")
        return out

    base = draw(args.n)
    queries = draw(args.queries or 1000)
    return base, queries


def fashion_files():
    """Paths of the training and test images, installing the Debian package if needed."""

    def listed():
        out = subprocess.run(
            ["dpkg", "-L", FASHION_PACKAGE], capture_output=True, text=True, check=False
        )
        return out.stdout.split() if out.returncode == 0 else []

    files = listed()
    if not files:
        print(f"installing the Debian package {FASHION_PACKAGE}", file=sys.stderr)
        install = subprocess.run(
            ["apt-get", "install", "-y", "-q", FASHION_PACKAGE], check=False
        )
        if install.returncode != 0:
            sys.exit(
                f"error: cannot install {FASHION_PACKAGE}: run `apt-get update && "
                f"apt-get install {FASHION_PACKAGE}` as root, then rerun"
            )
        files = listed()

    def find(stem):
        for f in files:
            if Path(f).name in (stem, stem + ".gz") and Path(f).is_file():
                return Path(f)
        sys.exit(f"error: {FASHION_PACKAGE} has no file {stem}[.gz] (dpkg -L lists its files)")

    return find(FASHION_TRAIN), find(FASHION_TEST)


def read_idx_images(path):
    """An IDX3 unsigned-byte image file (optionally gzipped) as a count × pixels uint8 array."""
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 16:
        sys.exit(f"error: {path}: too short for an IDX header")
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != 0x803:
        sys.exit(f"error: {path}: magic {magic:#x} is not that of IDX3 unsigned-byte images (0x803)")
    pixels = rows * cols
    if len(data) - 16 != count * pixels:
        sys.exit(f"error: {path}: {len(data) - 16} data bytes, the header promises {count * pixels}")
    return np.frombuffer(data, np.uint8, offset=16).reshape(count, pixels)


def fashion_mnist(args):
    train, test = fashion_files()
    base = normalise_rows(read_idx_images(train).astype("float32"), str(train))
    queries = read_idx_images(test)
    if args.queries is not None:
        if args.queries > len(queries):
            sys.exit(f"error: --queries {args.queries}: {test} has {len(queries)} images")
        queries = queries[: args.queries]
    queries = normalise_rows(queries.astype("float32"), str(test))
    return base, queries


def exact_truth(base, queries, k):
    """Row ids of each query's top-k inner products, best first, equal scores smaller id first.

    Candidates come from a chunked float32 matrix product; their order from float64 scores."""
    import numpy as np

    n = len(base)
    if n < k:
        sys.exit(f"error: the base has {n} rows, fewer than the top-{k} the truth needs")
    truth = np.empty((len(queries), k), np.int32)
    # About 256 MB of scores per chunk.
    chunk = max(1, (64 << 20) // n)
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk]
        scores = block @ base.T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        for i, ids in enumerate(top):
            exact = base[ids].astype(np.float64) @ block[i].astype(np.float64)
            truth[start + i] = ids[np.lexsort((ids, -exact))]
    return truth


def prepare(args, directory):
    """Writes (or reuses) base.npy, queries.npy and truth.npy in `directory`; returns a
    description of the dataset."""
    import numpy as np

    settings = {"dataset": args.dataset, "queries": args.queries, "truth_k": TRUTH_K}
    if args.dataset == "clustered":
        settings.update(
            n=args.n, dim=args.dim, clusters=args.clusters, spread=args.spread, seed=args.seed
        )
    meta_path = directory / "dataset.json"
    paths = {name: directory / f"{name}.npy" for name in ("base", "queries", "truth")}
    if meta_path.exists() and all(p.exists() for p in paths.values()):
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") == settings:
            print(f"reusing the data in {directory}", file=sys.stderr)
            return meta
    started = time.perf_counter()
    base, queries = clustered(args) if args.dataset == "clustered" else fashion_mnist(args)
    generated = time.perf_counter() - started
    started = time.perf_counter()
    truth = exact_truth(base, queries, TRUTH_K)
    truth_seconds = time.perf_counter() - started
    np.save(paths["base"], base)
    np.save(paths["queries"], queries)
    np.save(paths["truth"], truth)
    meta = {
        "settings": settings,
        "base_rows": int(base.shape[0]),
        "dim": int(base.shape[1]),
        "query_count": int(queries.shape[0]),
        "prepare_seconds": round(generated, 2),
        "truth_seconds": round(truth_seconds, 2),
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


# ---------------------------------------------------------------------------------------------
# Measuring the Python engines (each in its own process: `--run-peer`)


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


def recall_at(returned, truth, j):
    """|first j returned ∩ first j of the truth| / j, as feedrank computes it."""
    return len(set(returned[:j].tolist()) & set(truth[:j].tolist())) / j


def beams(efs, k):
    return sorted({max(ef, k) for ef in efs})


def measure(call, ids_of, queries, truth, k, passes):
    """Warm-up, then `passes` timed calls per query (one pass over all the queries after the
    other), keeping each query's fastest; `call(q, k)` searches, `ids_of(result)` gives the
    returned row ids, best first."""
    import numpy as np

    singles = [queries[i : i + 1] for i in range(len(queries))]
    for q in singles[:WARMUP_QUERIES]:
        call(q, k)
    clock = time.perf_counter_ns
    micros = np.full(len(singles), np.inf)
    cutoffs = [j for j in RECALL_KS if j <= k]
    sums = dict.fromkeys(cutoffs, 0.0)
    for p in range(passes):
        for i, q in enumerate(singles):
            t0 = clock()
            result = call(q, k)
            t1 = clock()
            micros[i] = min(micros[i], (t1 - t0) / 1000)
            if p == 0:
                ids = ids_of(result)
                for j in cutoffs:
                    sums[j] += recall_at(ids, truth[i], j)
    return {
        "queries": len(singles),
        "median_us": float(np.percentile(micros, 50)),
        "p99_us": float(np.percentile(micros, 99)),
        "mean_us": float(micros.mean()),
        "recall": {str(j): sums[j] / len(singles) for j in cutoffs},
    }


def call_overhead(make_tiny, call, ids_of, dim):
    """Median time of a search call on a one-vector index: what a call costs besides the
    search itself (argument conversion, result arrays, the timer)."""
    import numpy as np

    tiny = make_tiny(np.ones((1, dim), np.float32) / np.sqrt(dim))
    q = np.ones((1, dim), np.float32)
    clock = time.perf_counter_ns
    times = []
    for _ in range(2000):
        t0 = clock()
        ids_of(call(tiny, q, 1))
        t1 = clock()
        times.append((t1 - t0) / 1000)
    return float(np.median(times))


def timer_overhead():
    import numpy as np

    clock = time.perf_counter_ns
    times = []
    for _ in range(2000):
        t0 = clock()
        t1 = clock()
        times.append((t1 - t0) / 1000)
    return float(np.median(times))


def run_peer(args):
    import numpy as np

    data = args.out
    base = np.load(data / "base.npy")
    queries = np.load(data / "queries.npy")
    truth = np.load(data / "truth.npy")
    n, dim = base.shape

    def emit(record):
        print(json.dumps(record), flush=True)

    if args.run_peer == "hnswlib":
        import hnswlib

        def make(vectors, threads):
            index = hnswlib.Index(space="ip", dim=dim)
            index.init_index(
                max_elements=len(vectors), ef_construction=EF_CONSTRUCTION, M=M, random_seed=100
            )
            index.set_num_threads(threads)
            index.add_items(vectors, np.arange(len(vectors)))
            index.set_num_threads(1)
            return index

        def set_beam(index, beam):
            index.set_ef(beam)

        def search(index):
            return index.knn_query

        def ids_of(result):
            return result[0][0]

        version = getattr(hnswlib, "__version__", None)
        build_options = None
    else:
        import faiss

        def make(vectors, threads):
            index = faiss.IndexHNSWFlat(dim, M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = EF_CONSTRUCTION
            faiss.omp_set_num_threads(threads)
            index.add(vectors)
            faiss.omp_set_num_threads(1)
            return index

        def set_beam(index, beam):
            index.hnsw.efSearch = beam

        def search(index):
            return index.search

        def ids_of(result):
            return result[1][0]

        version = faiss.__version__
        # Which SIMD build of the library was loaded (the wheel ships several).
        build_options = faiss.get_compile_options()

    from importlib import metadata

    package = "hnswlib" if args.run_peer == "hnswlib" else "faiss-cpu"
    emit(
        {
            "kind": "versions",
            "engine": args.run_peer,
            "version": version or metadata.version(package),
            "build_options": build_options,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "call_overhead_us": call_overhead(
                lambda v: make(v, 1), lambda i, q, k: search(i)(q, k), ids_of, dim
            ),
            "timer_overhead_us": timer_overhead(),
        }
    )
    before = rss_bytes()
    started = time.perf_counter()
    index = make(base, args.build_threads)
    seconds = time.perf_counter() - started
    emit(
        {
            "kind": "build",
            "engine": args.run_peer,
            "seconds": seconds,
            "rss_growth_bytes": rss_bytes() - before,
            "threads": args.build_threads,
        }
    )
    call = search(index)
    for k in REQUESTED_KS:
        for beam in beams(args.efs, k):
            set_beam(index, beam)
            row = measure(call, ids_of, queries, truth, k, args.passes)
            emit({"kind": "search", "engine": args.run_peer, "ef": beam, "k_requested": k, **row})


# ---------------------------------------------------------------------------------------------
# Running everything and printing the tables


def json_lines(cmd, env=None):
    """Runs `cmd`, collecting the JSON records it prints and reporting each on stderr as it
    comes (a large build takes many minutes)."""
    print("running: " + " ".join(str(c) for c in cmd), file=sys.stderr)
    records = []
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, env=env) as proc:
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            records.append(record)
            note = progress(record)
            if note:
                print("  " + note, file=sys.stderr, flush=True)
    if proc.returncode != 0:
        sys.exit(f"error: {cmd[0]} exited with status {proc.returncode}")
    return records


def progress(record):
    """A one-line note on a build or a search record; `None` for the others."""
    kind = record["kind"]
    if kind == "build":
        return f"built {record['engine']} in {record['seconds']:.1f} s"
    if kind == "search":
        recall = ", ".join(f"@{j} {v:.4f}" for j, v in record["recall"].items())
        ef = record["ef"] if record["ef"] is not None else "-"
        return (
            f"{record['engine']} ef {ef} k {record['k_requested']}: median "
            f"{record['median_us']:.1f} µs, recall {recall}"
        )
    return None


def run_feedrank(args, directory):
    if args.feedrank_bin:
        cmd = [str(args.feedrank_bin)]
    else:
        cmd = ["cargo", "run", "--release", "--quiet", "--"]
    cmd += [
        "bench", "ann",
        "--base", str(directory / "base.npy"),
        "--queries", str(directory / "queries.npy"),
        "--truth", str(directory / "truth.npy"),
        "--metric", "cosine",
        "--m", str(M),
        "--ef-construction", str(EF_CONSTRUCTION),
        "--ef", ",".join(map(str, args.efs)),
        "--k", ",".join(map(str, RECALL_KS)),
        "--engines", args.feedrank_engines,
        "--passes", str(args.passes),
        "--json",
    ]  # fmt: skip
    if args.exact_queries:
        cmd += ["--exact-queries", str(args.exact_queries)]
    # hnsw_rs builds on rayon's pool, which takes its size from this variable.
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.build_threads))
    return json_lines(cmd, env)


def rows_of(feedrank_records, peer_records):
    """One row per search run: engine, ef, k, recall, latency, build seconds, memory."""
    builds = {}
    for r in feedrank_records:
        if r["kind"] == "build":
            # The flat index and the scan know their heap; hnsw_rs only its RSS growth.
            memory = r.get("memory_bytes")
            builds["feedrank " + r["engine"]] = (
                r["seconds"],
                memory if memory is not None else r.get("rss_growth_bytes"),
            )
    for r in peer_records:
        if r["kind"] == "build":
            builds[r["engine"]] = (r["seconds"], r["rss_growth_bytes"])
    rows = []
    for name, records in [("feedrank ", feedrank_records), ("", peer_records)]:
        for r in records:
            if r["kind"] != "search":
                continue
            engine = name + r["engine"]
            build_s, memory = builds.get(engine, (None, None))
            rows.append(dict(r, engine=engine, build_s=build_s, memory=memory))
    return rows


def fmt(value, spec):
    return "–" if value is None else format(value, spec)


def print_tables(title, meta, feedrank_records, peer_records, args):
    rows = rows_of(feedrank_records, peer_records)
    setup = next((r for r in feedrank_records if r["kind"] == "setup"), {})
    versions = [r for r in peer_records if r["kind"] == "versions"]
    print(f"\n## {title}\n")
    print(
        f"{meta['base_rows']:,} base vectors × {meta['dim']}, {meta['query_count']:,} queries, "
        f"truth: exact top-{TRUTH_K} by inner product (numpy). Metric: inner product of unit "
        f"vectors (cosine) everywhere. M {M}, ef_construction {EF_CONSTRUCTION}; builds on "
        f"{args.build_threads} thread(s), searches on one thread, one query per call, "
        f"{WARMUP_QUERIES} untimed warm-up queries per run, then each query's fastest of "
        f"{args.passes} timed passes; ef is the beam, max(--ef, k)."
    )
    cpu = cpu_model()
    print(
        f"\nMachine: {cpu}, {os.cpu_count()} cores (shared: expect noise). Python "
        f"{platform.python_version()}, numpy {versions[0]['numpy'] if versions else '?'}, "
        + ", ".join(
            f"{v['engine']} {v['version']}"
            + (f" ({v['build_options'].strip()})" if v.get("build_options") else "")
            for v in versions
        )
        + f"; feedrank: {args.feedrank_bin or 'cargo run --release'}"
        + "."
    )
    memory = next(
        (r for r in feedrank_records if r["kind"] == "memory" and r["stage"] == "after_build"),
        None,
    )
    if memory is not None:
        print(
            f"\nfeedrank's process once its indexes were built: VmRSS "
            f"{memory['vm_rss_bytes'] / 2**20:.1f} MB, VmHWM {memory['vm_hwm_bytes'] / 2**20:.1f} MB "
            f"(it holds the engines asked for, {', '.join(engines_of(feedrank_records))}, "
            f"built on {setup.get('build_threads', '?')} thread(s))."
        )
    print()
    print(
        "| engine | ef | k | recall@10 | recall@100 | recall@200 | median µs | p99 µs "
        "| build s | memory MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        recall = r["recall"]
        print(
            f"| {r['engine']} | {fmt(r['ef'], 'd')} | {r['k_requested']} "
            + "".join(f"| {fmt(recall.get(str(j)), '.4f')} " for j in RECALL_KS)
            + f"| {r['median_us']:.1f} | {r['p99_us']:.1f} | {fmt(r['build_s'], '.1f')} "
            f"| {fmt(None if r['memory'] is None else r['memory'] / 2**20, '.1f')} |"
        )
    exact_rows = [r for r in rows if r["engine"] == "feedrank exact"]
    if exact_rows and exact_rows[0]["queries"] < meta["query_count"]:
        print(f"\nThe exact scan ran on the first {exact_rows[0]['queries']} queries only.")
    print(
        "\nBuild s: the graph build (feedrank flat: feedrank's own builder into flat "
        "arrays). Memory MB: feedrank flat and exact: heap the index holds; feedrank hnsw_rs, "
        "hnswlib, faiss: growth of the process's resident memory across the build."
    )
    print_overhead(versions)
    print_equal_recall(rows, versions)


def engines_of(records):
    return [r["engine"] for r in records if r["kind"] == "build"]


def print_overhead(versions):
    if not versions:
        return
    print(
        "\nPython engines' per-query times include the Python call (argument conversion, "
        "result arrays, the GIL, the timer), which feedrank's do not, so the comparison "
        "slightly favours feedrank. Median time of one call on a one-vector index: "
        + ", ".join(f"{v['engine']} {v['call_overhead_us']:.1f} µs" for v in versions)
        + f" (of which the timer pair {versions[0]['timer_overhead_us']:.2f} µs)."
    )


def print_equal_recall(rows, versions):
    overhead = {v["engine"]: v["call_overhead_us"] for v in versions}
    print("\n### Equal recall\n")
    print(
        "Each engine's smallest ef in the sweep that reaches the target, its median per query, "
        "and feedrank flat's median divided by it (below 1: feedrank is faster); in brackets, "
        "the ratio after subtracting the Python engine's call overhead from its median.\n"
    )
    print("| target | engine | ef | recall | median µs | feedrank flat / engine |")
    print("|---|---|---:|---:|---:|---:|")
    engines = []
    for r in rows:
        if r["engine"] not in engines and r["engine"] != "feedrank exact":
            engines.append(r["engine"])
    for k, j, target in TARGETS:
        label = f"recall@{j} ≥ {target} (k = {k})"
        best = {}
        for engine in engines:
            reaching = [
                r
                for r in rows
                if r["engine"] == engine
                and r["k_requested"] == k
                and r["recall"].get(str(j), 0.0) >= target
            ]
            best[engine] = min(reaching, key=lambda r: r["ef"]) if reaching else None
        flat = best.get("feedrank flat")
        for engine in engines:
            r = best[engine]
            if r is None:
                print(f"| {label} | {engine} | – | – | – | never reaches it in the sweep |")
                continue
            ratio = "–"
            if flat is not None and engine != "feedrank flat":
                ratio = f"{flat['median_us'] / r['median_us']:.2f}"
                if engine in overhead and r["median_us"] > overhead[engine]:
                    ratio += f" ({flat['median_us'] / (r['median_us'] - overhead[engine]):.2f})"
            print(
                f"| {label} | {engine} | {r['ef']} | {r['recall'][str(j)]:.4f} "
                f"| {r['median_us']:.1f} | {ratio} |"
            )
        exact = next(
            (r for r in rows if r["engine"] == "feedrank exact" and r["k_requested"] == k), None
        )
        if exact is not None:
            speedup = (
                f"feedrank flat's speed-up over the scan: "
                f"{exact['median_us'] / flat['median_us']:.1f}×"
                if flat is not None
                else "–"
            )
            print(
                f"| {label} | exact scan | – | {exact['recall'][str(j)]:.4f} "
                f"| {exact['median_us']:.1f} | {speedup} |"
            )


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    args = parse_args(sys.argv[1:])
    if not in_venv():
        ensure_venv_and_reexec()
    if args.run_peer:
        run_peer(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as scratch:
        directory = args.out or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        meta = prepare(args, directory)
        print(
            f"data: {meta['base_rows']:,} × {meta['dim']}, {meta['query_count']:,} queries in "
            f"{directory} (truth computed in {meta.get('truth_seconds', '?')} s)",
            file=sys.stderr,
        )
        feedrank_records = run_feedrank(args, directory)
        peer_records = []
        for peer in args.peer_list:
            cmd = [
                sys.executable, str(Path(__file__).resolve()),
                "--run-peer", peer,
                "--out", str(directory),
                "--ef", ",".join(map(str, args.efs)),
                "--build-threads", str(args.build_threads),
                "--passes", str(args.passes),
            ]  # fmt: skip
            peer_records += json_lines(cmd)
        if args.dataset == "clustered":
            title = (
                f"Clustered synthetic vectors ({args.clusters} clusters, spread {args.spread}, "
                f"seed {args.seed})"
            )
        else:
            title = "Fashion-MNIST (Debian package dataset-fashion-mnist)"
        print_tables(title, meta, feedrank_records, peer_records, args)


if __name__ == "__main__":
    main()
