"""Benchmark: causal attention over one head, naive O(n^2) masked forms vs the chunked O(n) causal linear attention.

    python bench/bench_attention.py [--sizes 64 128 256 512 1024 2048 4096 8192 16384] [--dim 64]
                                    [--chunk 128] [--repeats 5] [--threads 1] [--device cpu|cuda] [--max-gb 4]

Three implementations, float32, d = d_v = dim, one head, causal:

* ``softmax naive``: ``softmax(mask(q k^T / sqrt(d))) v`` with the full n x n logits (softmax_attention);
* ``linear naive``:  ``(tril(phi(q) phi(k)^T) / row sums) v`` with the full n x n matrix (linear_attention_naive);
* ``linear chunked``: utils.attention.linear_attention(causal=True): prefix sums carried across chunks, masked
  chunk x chunk products inside a chunk; never n x n.

phi = elu + 1 (m = d features), applied inside the timed region for both linear forms.

Memory: torch's CPU allocations are invisible to tracemalloc, so every (implementation, n) runs in a FRESH
subprocess that builds its inputs, warms up on a short sequence, reads ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
(the baseline: interpreter + torch + inputs), runs the kernel, and reports the growth of the peak resident set
size. On CUDA it reports ``torch.cuda.max_memory_allocated`` minus the allocation before the call. Next to the
measurement the table gives an analytic upper estimate of the temporaries. Naive forms whose analytic footprint
exceeds ``--max-gb`` are skipped.

Prints one row per (n, implementation): median seconds, peak extra MiB (measured and analytic), and the ratios
naive / chunked; then the crossover length (first n from which the chunked form is faster than naive softmax at
every larger n, with a log-log interpolation between grid points). A last table times the row-entropy kernels
(chunked ``linear_attention_entropy`` and key-streamed ``utils.entropy.attention_row_entropy`` against entropies
of the materialised matrix) at ``--entropy-n`` (default 4096). The default grid is 512...16384 plus 64, 128
and 256, where the crossover lies on one CPU thread. Not a test: timings depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMPLS = ("softmax naive", "linear naive", "linear chunked")


def analytic_bytes(impl: str, n: int, d: int, chunk: int, itemsize: int = 4) -> int:
    """Bytes of the largest simultaneously live temporaries (inputs excluded)."""
    if impl == "softmax naive":      # logits, masked logits, softmax weights (n^2 each) + bool mask (n^2 bytes)
        return 3 * n * n * itemsize + n * n + n * d * itemsize
    if impl == "linear naive":       # phi(q), phi(k); sim, tril(sim), normalised (n^2 each) + output
        return 3 * n * n * itemsize + 3 * n * d * itemsize
    # chunked: phi(q), phi(k), numerator, output (n x d each), denominator, state (d x d), chunk x chunk block x2
    c = min(chunk, n)
    return (4 * n * d + n + d * d + 2 * c * c + 2 * c * d) * itemsize


def worker(impl: str, n: int, d: int, chunk: int, repeats: int, threads: int, device: str) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from utils.attention import linear_attention, linear_attention_naive, softmax_attention

    torch.set_num_threads(threads)
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(0)

    def inputs(length: int):
        return [torch.randn(length, d, generator=gen, device=dev, dtype=torch.float32) for _ in range(3)]

    def elu1(x):
        return torch.nn.functional.elu(x) + 1

    def run(q, k, v):
        if impl == "softmax naive":
            return softmax_attention(q, k, v, causal=True)
        if impl == "linear naive":
            return linear_attention_naive(elu1(q), elu1(k), v, causal=True)
        return linear_attention(elu1(q), elu1(k), v, causal=True, chunk_size=chunk)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    run(*inputs(min(n, 256)))  # warm-up: first-call costs (kernels, allocator pools) leave the measurement
    q, k, v = inputs(n)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = run(q, k, v)
        sync()
        times.append(time.perf_counter() - t0)
        del out
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"seconds": statistics.median(times), "peak_bytes": int(peak)}


def crossover(sizes: list[int], t_naive: dict, t_chunk: dict) -> tuple[int | None, float | None]:
    """First grid n from which chunked < naive for every larger measured n, and a log-log interpolated estimate."""
    common = [n for n in sizes if n in t_naive and n in t_chunk]
    faster = [t_chunk[n] < t_naive[n] for n in common]
    for i, n in enumerate(common):
        if all(faster[i:]):
            if i == 0:
                return n, None  # faster already at the smallest size: the crossover lies below the grid
            n0 = common[i - 1]
            r0 = math.log(t_chunk[n0] / t_naive[n0])
            r1 = math.log(t_chunk[n] / t_naive[n])
            frac = r0 / (r0 - r1)
            return n, math.exp(math.log(n0) + frac * (math.log(n) - math.log(n0)))
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--max-gb", type=float, default=4.0)
    parser.add_argument("--entropy-n", type=int, default=4096, help="0 skips the entropy benchmark")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        impl, n = args.worker[0].replace("_", " "), int(args.worker[1])
        print(json.dumps(worker(impl, n, args.dim, args.chunk, args.repeats, args.threads, args.device)))
        return

    print(f"causal attention, one head, d = d_v = {args.dim}, float32, device = {args.device}, "
          f"threads = {args.threads}, chunk = {args.chunk}, median of {args.repeats}; each cell a fresh process")
    header = (f"{'n':>6} {'implementation':<15} {'seconds':>9} {'peak MiB':>9} {'analytic MiB':>13} "
              f"{'t / t_chunked':>14} {'mem / mem_chunked':>18}")
    print(header)
    print("-" * len(header))
    results: dict[str, dict[int, dict]] = {impl: {} for impl in IMPLS}
    for n in args.sizes:
        rows = []
        for impl in IMPLS:
            est = analytic_bytes(impl, n, args.dim, args.chunk)
            if impl != "linear chunked" and est > args.max_gb * 2**30:
                rows.append((impl, None, est))
                continue
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl.replace(" ", "_"), str(n),
                   "--dim", str(args.dim), "--chunk", str(args.chunk), "--repeats", str(args.repeats),
                   "--threads", str(args.threads), "--device", args.device]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            results[impl][n] = res
            rows.append((impl, res, est))
        ref = results["linear chunked"][n]
        for impl, res, est in rows:
            if res is None:
                print(f"{n:>6} {impl:<15} {'skipped':>9} {'':>9} {est / 2**20:>13.1f}   (analytic > {args.max_gb} GB)")
                continue
            t_ratio = res["seconds"] / ref["seconds"]
            m_ratio = res["peak_bytes"] / ref["peak_bytes"] if ref["peak_bytes"] > 0 else float("nan")
            print(f"{n:>6} {impl:<15} {res['seconds']:>9.4f} {res['peak_bytes'] / 2**20:>9.1f} {est / 2**20:>13.1f} "
                  f"{t_ratio:>14.2f} {m_ratio:>18.2f}")
        sys.stdout.flush()
    t_soft = {n: r["seconds"] for n, r in results["softmax naive"].items()}
    t_lin = {n: r["seconds"] for n, r in results["linear naive"].items()}
    t_chunk = {n: r["seconds"] for n, r in results["linear chunked"].items()}
    for name, t_naive in (("naive masked softmax", t_soft), ("naive masked linear", t_lin)):
        grid_n, interp = crossover(args.sizes, t_naive, t_chunk)
        if grid_n is None:
            print(f"crossover vs {name}: chunked causal linear attention is not faster at the largest sizes measured")
        elif interp is None:
            print(f"crossover vs {name}: chunked is faster at every measured n (crossover below n = {grid_n})")
        else:
            print(f"crossover vs {name}: chunked faster from n = {grid_n} on "
                  f"(log-log interpolation: n* ~ {interp:.0f})")
    # tiny sizes stay inside pages already touched by the warm-up (growth 0): compare from n >= 512 on
    chunk_mem = [(n, r["peak_bytes"]) for n, r in results["linear chunked"].items()
                 if n >= 512 and r["peak_bytes"] > 0]
    if len(chunk_mem) >= 2:
        (n0, m0), (n1, m1) = chunk_mem[0], chunk_mem[-1]
        print(f"chunked peak memory growth n = {n0} -> {n1} ({n1 / n0:.0f}x longer): {m1 / m0:.1f}x "
              f"(linear in n: {n1 / n0:.0f}x; naive quadratic: {(n1 / n0) ** 2:.0f}x)")
    print("peak MiB = growth of the peak resident set size (CPU: ru_maxrss) over the post-warm-up baseline, "
          "which already holds q, k, v; it has page granularity and includes allocator slack. analytic MiB = an "
          "upper estimate of the live temporaries computed from the shapes (torch may free or reuse some earlier).")
    if args.entropy_n:
        entropy_bench(args.entropy_n, args.dim, args.threads, args.device)


def entropy_bench(n: int, d: int, threads: int, device: str) -> None:
    """Row entropies of n x n attention: chunked/streamed kernels vs the materialised matrix (float64)."""
    import torch

    sys.path.insert(0, str(ROOT))
    from utils.attention import attention_entropy, attention_matrix, linear_attention_entropy, linear_attention_matrix
    from utils.entropy import attention_row_entropy

    torch.set_num_threads(threads)
    gen = torch.Generator(device=device).manual_seed(1)
    q, k = (torch.randn(n, d, generator=gen, device=device, dtype=torch.float64) for _ in range(2))
    fq, fk = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    scale = 1 / math.sqrt(d)
    cases = [
        ("linear, naive matrix", lambda: attention_entropy(linear_attention_matrix(fq, fk)), 3 * n * n * 8),
        ("linear, chunked rows", lambda: linear_attention_entropy(fq, fk, chunk_size=1024), 3 * 1024 * n * 8),
        ("softmax, naive matrix", lambda: attention_entropy(attention_matrix(q, k)), 3 * n * n * 8),
        ("softmax, streamed keys", lambda: attention_row_entropy(q, k, scale, chunk_size=1024) / math.log(n),
         3 * 1024 * n * 8),
    ]
    print(f"\nrow entropies, n = {n}, d = {d}, float64, {device}: seconds, analytic peak of temporaries, max diff")
    ref = {}
    for name, fn, mem in cases:
        fn()
        t0 = time.perf_counter()
        out = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        kind = name.split(",")[0]
        diff = float((out - ref[kind]).abs().max()) if kind in ref else 0.0
        ref.setdefault(kind, out)
        print(f"  {name:<24} {seconds:>8.3f} s {mem / 2**20:>9.1f} MiB   max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
