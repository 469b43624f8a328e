"""Benchmark: exact k-NN for k-occurrence (hubness) counts, utils.hubness.knn_indices vs its peers, side by side.

    python bench/bench_hubness.py [--sizes 5000 20000 50000] [--dim 64] [--k 5] [--threads 1 2]

Same data (float32 standard Gaussian points, seed 0) for every implementation; Euclidean k-NN of every point among
all the others (self excluded). Implementations:

* ``hubness.knn_indices``  -- this book's kernel: query blocks sized for the cache + exact grouped top-k;
* ``plain chunked topk``   -- the baseline "score block + torch.topk" (4096-query blocks, no grouped top-k:
  knn_indices with group_size=1);
* ``faiss IndexFlatL2``    -- faiss-cpu exact flat search (k + 1 neighbours, the first is the point itself);
* ``sklearn brute``        -- NearestNeighbors(algorithm="brute").kneighbors (k + 1 neighbours);
* ``numpy full matrix``    -- the whole N x N matrix + argpartition (only for N <= 20000);
* ``torch CUDA``           -- knn_indices on the GPU when one is present.

Each (implementation, N, threads) runs in a fresh subprocess, so that peak memory can be read from
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (tracemalloc does not see torch's allocator): the table shows the rise
of the peak resident set during the search, above the peak reached after creating the data and warming up. On CUDA
the figure is ``torch.cuda.max_memory_allocated``. Every implementation's neighbour sets are checked against
knn_indices (``agree``: fraction of identical sets). Wall and CPU (process) seconds are both shown: on a busy
machine the CPU time of a 1-thread run is the more reliable figure. Not a test: timings depend on the machine.
Requirements: see bench/requirements.txt (faiss-cpu is optional; its rows are skipped when it is missing).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPLEMENTATIONS = ["hubness.knn_indices", "plain chunked topk", "faiss IndexFlatL2", "sklearn brute",
                   "numpy full matrix", "torch CUDA"]


def _worker(impl: str, n: int, dim: int, k: int, threads: int) -> dict:
    """Run one implementation once in this (fresh) process; return seconds, peak extra memory and the indices."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from utils.hubness import knn_indices

    torch.set_num_threads(threads)
    X = torch.randn(n, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float32)
    Xn = X.numpy()
    if impl == "hubness.knn_indices":
        knn_indices(X[:500], k)  # warm-up
        run = lambda: knn_indices(X, k).numpy()  # noqa: E731
    elif impl == "plain chunked topk":
        knn_indices(X[:500], k, chunk_size=4096, group_size=1)
        run = lambda: knn_indices(X, k, chunk_size=4096, group_size=1).numpy()  # noqa: E731
    elif impl == "faiss IndexFlatL2":
        import faiss
        faiss.omp_set_num_threads(threads)
        index = faiss.IndexFlatL2(dim)
        index.add(Xn)
        index.search(Xn[:500], k + 1)
        run = lambda: index.search(Xn, k + 1)[1][:, 1:]  # noqa: E731
    elif impl == "sklearn brute":
        from sklearn.neighbors import NearestNeighbors
        from threadpoolctl import threadpool_limits
        nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", n_jobs=threads).fit(Xn)
        nn.kneighbors(Xn[:500], return_distance=False)

        def run():
            with threadpool_limits(threads):
                return nn.kneighbors(Xn, return_distance=False)[:, 1:]
    elif impl == "numpy full matrix":
        from threadpoolctl import threadpool_limits

        def run():
            with threadpool_limits(threads):
                sq = (Xn * Xn).sum(1)
                d = sq[:, None] + sq[None, :] - 2 * Xn @ Xn.T
                np.fill_diagonal(d, np.inf)
                return np.argpartition(d, k, axis=1)[:, :k]
    elif impl == "torch CUDA":
        Xc = X.cuda()
        knn_indices(Xc[:500], k)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()

        def run():
            out = knn_indices(Xc, k)
            torch.cuda.synchronize()
            return out.cpu().numpy()
    else:
        raise ValueError(impl)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    idx = run()
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    if impl == "torch CUDA":
        peak = torch.cuda.max_memory_allocated() - base_cuda
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024  # ru_maxrss is in KiB (Linux)
    np.save(os.environ["BENCH_OUT"], np.sort(np.asarray(idx, dtype=np.int64), axis=1))
    return {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_bytes": peak}


def _available(impl: str) -> bool:
    if impl == "faiss IndexFlatL2":
        try:
            import faiss  # noqa: F401
        except ImportError:
            return False
    if impl == "torch CUDA":
        import torch
        return torch.cuda.is_available()
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000, 50000])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--impl", nargs="+", default=IMPLEMENTATIONS, help="subset of: " + ", ".join(IMPLEMENTATIONS))
    parser.add_argument("--naive-max", type=int, default=20000, help="largest N for the full-matrix version")
    parser.add_argument("--worker", nargs=5, metavar=("IMPL", "N", "DIM", "K", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        impl, n, dim, k, threads = args.worker
        print(json.dumps(_worker(impl, int(n), int(dim), int(k), int(threads))))
        return

    import numpy as np
    impls = [i for i in args.impl if _available(i)]
    print(f"exact Euclidean k-NN, d = {args.dim}, k = {args.k}, float32; skipped (not available): "
          f"{[i for i in args.impl if i not in impls] or 'none'}")
    header = (f"{'N':>7} {'thr':>3} {'implementation':<24} {'wall s':>8} {'CPU s':>8} {'peak MiB':>9} {'t/ours':>7} "
              f"{'t/faiss':>8} {'cpu/faiss':>9} {'agree':>6}")
    print(header)
    print("-" * len(header))
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    for n in args.sizes:
        for threads in args.threads:
            rows = {}
            for impl in impls:
                if impl == "numpy full matrix" and n > args.naive_max:
                    continue
                if impl == "torch CUDA" and threads != args.threads[0]:
                    continue
                out = tmp / f"bench_hubness_{os.getpid()}_{len(rows)}.npy"
                env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                           OPENBLAS_NUM_THREADS=str(threads), BENCH_OUT=str(out))
                proc = subprocess.run([sys.executable, __file__, "--worker", impl, str(n), str(args.dim),
                                       str(args.k), str(threads)], capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    print(f"{n:>7} {threads:>3} {impl:<24} FAILED: {proc.stderr.strip().splitlines()[-1:]}")
                    continue
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                result["idx"] = np.load(out)
                out.unlink()
                rows[impl] = result
            ours = rows.get("hubness.knn_indices")
            faiss_row = rows.get("faiss IndexFlatL2")
            for impl, r in rows.items():
                ratio = f"{r['seconds'] / ours['seconds']:7.2f}" if ours else "      -"
                ratio_f = f"{r['seconds'] / faiss_row['seconds']:8.2f}" if faiss_row else "       -"
                ratio_c = f"{r['cpu_seconds'] / faiss_row['cpu_seconds']:9.2f}" if faiss_row else "        -"
                agree = (r["idx"] == ours["idx"]).all(axis=1).mean() if ours else float("nan")
                print(f"{n:>7} {threads:>3} {impl:<24} {r['seconds']:>8.3f} {r['cpu_seconds']:>8.3f} "
                      f"{r['peak_bytes'] / 2**20:>9.1f} {ratio} {ratio_f} {ratio_c} {agree:>6.3f}")
            print()
    print("peak MiB: rise of the peak RSS during the search (CPU rows) or torch.cuda.max_memory_allocated (CUDA);")
    print("t/ours: wall time over hubness.knn_indices'; t/faiss, cpu/faiss: wall and CPU time over faiss IndexFlatL2's")
    print("(< 1: faster than faiss). On a shared machine the CPU-time ratio of the 1-thread rows is the fairer one.")


if __name__ == "__main__":
    main()
