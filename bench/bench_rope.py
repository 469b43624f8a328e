"""Benchmark: applying RoPE to a (batch, heads, n, d) tensor, utils.positions vs the peers.

    python bench/bench_rope.py [--sizes 512 1024 2048 4096 8192 16384] [--batch 1] [--heads 8] [--dim 64]
                               [--dtype float32] [--repeats 7] [--threads 1] [--device cpu|cuda]

Implementations (each: positions 0..n-1, base 10^4, the cos/sin table built once outside the timed region where
the implementation has one, as in a model's forward pass):

* ``ours interleaved``: ``utils.positions.apply_rope(x)`` (cached float64-angle cos/sin table, one complex multiply
  per pair for float32/float64);
* ``ours half``: ``apply_rope(x, layout="half")`` (fused mul/addcmul into a preallocated output);
* ``rotary-embedding-torch``: ``RotaryEmbedding(dim=d).rotate_queries_or_keys(x)`` (the peer's own API with its
  frequency cache; interleaved layout), skipped when the package is missing;
* ``HF Llama half-split``: transformers' ``apply_rotary_pos_emb`` on (q, k) = (x, x) with precomputed cos/sin
  (``q * cos + rotate_half(q) * sin``), timed per tensor (half the call), skipped when transformers is missing;
* ``half-split reference``: the same formula written out in torch (``x * cos + cat(-x2, x1) * sin``).

Memory: torch's CPU allocations are invisible to tracemalloc, so each (implementation, n) runs in a fresh
subprocess that builds its inputs and table, warms up on a short input, reads ``ru_maxrss`` (the baseline) and then
reports the growth of the peak resident set size over the timed calls (≈ output + temporaries; the output alone is
``B*H*n*d*itemsize``). On CUDA: ``torch.cuda.max_memory_allocated`` growth. Prints a table: median ms, peak extra
MiB, and the time ratio peer / ours (> 1: ours faster). Not a test: timings depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPLS = ("ours interleaved", "ours half", "rotary-embedding-torch", "HF Llama half-split", "half-split reference")


def _worker(impl: str, n: int, args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from utils.positions import apply_rope, rope_cos_sin, rope_frequencies

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    dev = torch.device(args.device)
    gen = torch.Generator(device="cpu").manual_seed(0)

    def make(length: int) -> tuple:
        x = torch.randn(args.batch, args.heads, length, args.dim, generator=gen).to(dev, dtype)
        if impl == "ours interleaved":
            return x, lambda: apply_rope(x)
        if impl == "ours half":
            return x, lambda: apply_rope(x, layout="half")
        if impl == "rotary-embedding-torch":
            from rotary_embedding_torch import RotaryEmbedding
            rot = RotaryEmbedding(dim=args.dim).to(dev)
            return x, lambda: rot.rotate_queries_or_keys(x)
        angles = torch.arange(length, dtype=torch.float64, device=dev)[:, None] * rope_frequencies(args.dim, device=dev)
        emb = torch.cat([angles, angles], dim=-1)
        cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)                     # (n, d)
        if impl == "HF Llama half-split":
            from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
            return x, lambda: apply_rotary_pos_emb(x, x, cos[None], sin[None])
        half = args.dim // 2

        def reference():
            return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin
        return x, reference

    _, warm = make(64)
    warm()
    rope_cos_sin.cache_clear()
    x, fn = make(n)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    fn()                                  # first call: builds the cached table (counted in the peak)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        del out
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    scale = 0.5 if impl == "HF Llama half-split" else 1.0                   # HF rotates q and k in one call
    return {"ms": 1e3 * statistics.median(times) * scale, "peak_mib": max(peak, 0) / 2**20,
            "out_mib": x.numel() * x.element_size() / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--impls", nargs="+", default=list(IMPLS))
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker[0], int(args.worker[1]), args)))
        return
    passthrough = [f"--batch={args.batch}", f"--heads={args.heads}", f"--dim={args.dim}", f"--dtype={args.dtype}",
                   f"--repeats={args.repeats}", f"--threads={args.threads}", f"--device={args.device}"]
    print(f"RoPE on (B={args.batch}, H={args.heads}, n, d={args.dim}) {args.dtype}, device {args.device}, "
          f"{args.threads} thread(s), median of {args.repeats}; peak = extra memory over the timed calls")
    header = (f"{'n':>6} | {'implementation':<24} | {'ms':>9} | {'peak MiB':>9} | {'output MiB':>10} | "
              f"{'time / ours':>11}")
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        rows = {}
        for impl in args.impls:
            proc = subprocess.run([sys.executable, __file__, "--worker", impl, str(n), *passthrough],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                rows[impl] = None
                print(f"{n:>6} | {impl:<24} | skipped: {last[:70]}")
                continue
            rows[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
        ours = rows.get("ours interleaved")
        for impl, row in rows.items():
            if row is None:
                continue
            ours_ms = (rows.get("ours half") if "half" in impl and rows.get("ours half") else ours or row)["ms"]
            ratio = row["ms"] / ours_ms
            print(f"{n:>6} | {impl:<24} | {row['ms']:>9.3f} | {row['peak_mib']:>9.1f} | {row['out_mib']:>10.1f} | "
                  f"{ratio:>11.2f}")
    print("time / ours: an implementation's time divided by ours in the same layout (interleaved peers vs "
          "'ours interleaved', half-split ones vs 'ours half'); > 1 means ours is faster.")


if __name__ == "__main__":
    main()
