#!/usr/bin/env python3
"""Baseline benchmark for ur-train: item-item co-occurrence with `implicit`.

Reads the same PredictionIO event JSON that ur-train reads (a file or a directory
of .jsonl / .jsonl.gz files), builds a binary user x item CSR matrix from one event
type and fits implicit's ItemItemRecommender (top-K co-occurrence neighbours per
item) on all cores. Prints one JSON object with the timing of each phase, so the
Rust trainer can be compared side by side on the same data.

    pip install -r scripts/bench-requirements.txt
    python scripts/bench_implicit.py --input data/online-retail

Note: this is a speed baseline, not the same model: implicit scores items by raw
co-occurrence counts (no LLR, no per-user event cap, no downsampling).
"""
import argparse
import gzip
import json
import os
import resource
import sys
import time
from array import array
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import threadpoolctl

import implicit
from implicit.nearest_neighbours import ItemItemRecommender

try:
    import orjson
except ImportError:  # fall back to the standard library
    orjson = None


def input_files(path):
    """The file itself, or every .jsonl/.jsonl.gz under a directory, sorted."""
    root = Path(path)
    if root.is_file():
        return [root]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
        for name in sorted(filenames):
            if name.startswith((".", "_")) or name.endswith(".md"):
                continue
            if name.endswith((".jsonl", ".jsonl.gz")):
                files.append(Path(dirpath) / name)
    return files


def read_events(files, event, loads):
    """Parse events; map user/item ids to dense ints. Returns (rows, cols, users, items, counts)."""
    users, items = {}, {}
    rows, cols = array("i"), array("i")
    read = bad = 0
    for path in files:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    ev = loads(line)
                    used = (ev["event"] == event and ev["entityType"] == "user"
                            and ev.get("targetEntityType") == "item")
                    if used:
                        user, item = ev["entityId"], ev["targetEntityId"]
                except Exception:  # not JSON, not an object, or a field missing
                    bad += 1
                    continue
                read += 1
                if used:
                    rows.append(users.setdefault(user, len(users)))
                    cols.append(items.setdefault(item, len(items)))
    return rows, cols, users, items, {"events_read": read, "parse_errors": bad}


def build_csr(rows, cols, n_users, n_items):
    """Binary float32 user x item CSR matrix; duplicate (user, item) pairs collapse to 1."""
    r = np.frombuffer(rows, dtype=np.int32)
    c = np.frombuffer(cols, dtype=np.int32)
    m = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def openmp_threads():
    """Threads OpenMP (hence implicit with num_threads=0) will use by default."""
    for pool in threadpoolctl.threadpool_info():
        if pool["user_api"] == "openmp":
            return pool["num_threads"]
    return os.cpu_count()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", required=True, help="event file or directory (.jsonl, .jsonl.gz)")
    ap.add_argument("--event", default="purchase", help="event name to use (default: purchase)")
    ap.add_argument("--k", type=int, default=50, help="neighbours kept per item (default: 50)")
    ap.add_argument("--threads", type=int, default=0,
                    help="implicit num_threads; 0 = all cores via OpenMP (default)")
    ap.add_argument("--parser", choices=["auto", "orjson", "json"], default="auto",
                    help="JSON parser (default: orjson if installed)")
    args = ap.parse_args()

    use_orjson = args.parser == "orjson" or (args.parser == "auto" and orjson is not None)
    if use_orjson and orjson is None:
        ap.error("orjson is not installed")
    loads = orjson.loads if use_orjson else json.loads
    files = input_files(args.input)
    if not files:
        ap.error(f"no .jsonl or .jsonl.gz files under {args.input}")

    t0 = time.perf_counter()
    rows, cols, users, items, counts = read_events(files, args.event, loads)
    t1 = time.perf_counter()
    matrix = build_csr(rows, cols, len(users), len(items))
    t2 = time.perf_counter()
    # implicit's Cython kernel only takes float64 data (float32 raises
    # "Buffer dtype mismatch"), so the cast is part of the fit phase.
    cpu0 = time.process_time()
    model = ItemItemRecommender(K=args.k, num_threads=args.threads)
    model.fit(matrix.astype(np.float64), show_progress=False)
    t3 = time.perf_counter()
    fit_cpu = time.process_time() - cpu0

    out = {
        "input": str(args.input),
        "files": len(files),
        **counts,
        "events_used": len(rows),
        "users": matrix.shape[0],
        "items": matrix.shape[1],
        "nnz": int(matrix.nnz),
        "similarity_nnz": int(model.similarity.nnz),
        "read_s": round(t1 - t0, 4),
        "csr_s": round(t2 - t1, 4),
        "fit_s": round(t3 - t2, 4),
        "fit_cpu_s": round(fit_cpu, 4),
        "total_s": round(t3 - t0, 4),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "implicit_version": implicit.__version__,
        "threads": args.threads if args.threads > 0 else openmp_threads(),
        "json_parser": f"orjson {orjson.__version__}" if use_orjson else "json (stdlib)",
    }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
