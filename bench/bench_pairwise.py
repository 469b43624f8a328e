"""Benchmark: JL distortion over all pairs, naive full-matrix numpy vs chunked torch (CPU, and CUDA when present).

    python bench/bench_pairwise.py [--sizes 1000 4000 10000] [--dim 256] [--out-dim 64]

Prints one table row per (N, implementation): seconds, peak extra memory, and the ratio to the chunked CPU kernel.
Not a test: timings depend on the machine.
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from utils.geometry import jl_distortion  # noqa: E402


def naive_numpy(X: np.ndarray, Z: np.ndarray) -> float:
    """Full N x N matrices of squared distances, then the max distortion over i < j."""
    def sq(A):
        s = (A * A).sum(1)
        return np.maximum(s[:, None] + s[None, :] - 2 * A @ A.T, 0)
    dx, dz = sq(X), sq(Z)
    iu = np.triu_indices(len(X), 1)
    return float(np.abs(dz[iu] / dx[iu] - 1).max())


def timed(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return value, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 10000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--out-dim", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=2048)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    print(f"{'N':>7} {'implementation':<22} {'seconds':>9} {'peak MiB':>9} {'ratio':>7}  max distortion")
    for n in args.sizes:
        X = torch.randn(n, args.dim, generator=gen, dtype=torch.float64)
        Z = X @ (torch.randn(args.dim, args.out_dim, generator=gen, dtype=torch.float64) / args.out_dim ** 0.5)
        rows = []
        ref, t_ref, _ = timed(lambda: jl_distortion(X, Z, chunk_size=args.chunk)["max_abs"])
        # tracemalloc does not see torch's allocator: report the kernel's bound, three chunk x N float64 blocks
        rows.append(("torch chunked (CPU)*", ref, t_ref, 3 * min(args.chunk, n) * n * 8))
        if n <= 20000:  # the naive version needs ~3 N^2 doubles
            val, t, m = timed(lambda: naive_numpy(X.numpy(), Z.numpy()))
            rows.append(("numpy full matrix", val, t, m))
        if torch.cuda.is_available():
            Xc, Zc = X.cuda(), Z.cuda()
            jl_distortion(Xc[:10], Zc[:10])
            torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            val = jl_distortion(Xc, Zc, chunk_size=args.chunk)["max_abs"]
            torch.cuda.synchronize()
            rows.append(("torch chunked (CUDA)", val, time.perf_counter() - t0, torch.cuda.max_memory_allocated()))
        for name, val, t, m in rows:
            print(f"{n:>7} {name:<22} {t:>9.3f} {m / 2**20:>9.1f} {t / t_ref:>7.2f}  {val:.6f}")
    print("* peak memory of the chunked CPU kernel is its bound (3 blocks of chunk x N float64), not a measurement")


if __name__ == "__main__":
    main()
