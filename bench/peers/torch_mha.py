"""PyTorch peers for bench/: nn.MultiheadAttention (eval, inference_mode) and
F.scaled_dot_product_attention (projections with F.linear around it, as users
write it), on the CPU with a fixed thread count.

One case per (fresh) process, checked against our output, as one JSON line
(the schema of `hmha_bench --case`); bench/report.py drives this:

    python bench/peers/torch_mha.py --case mha|sdpa --ref DIR [--threads 2] [--min-time 1.0] [--device cpu|cuda]

DIR is what `hmha_bench --case ours --dump DIR ...` wrote: the shape and flags
(meta.json), the inputs and parameters, and our output (and weights: averaged,
or per head after `--per-head-weights`, which nn.MultiheadAttention then
returns too, average_attn_weights=False).
The inputs and parameters are loaded from there, so both run on identical data;
the output is compared with ours (max abs diff / max |ours| <= 1e-4) before any
run is timed.

Without --case it prints a quick table of both peers at the issue's shapes on
random inputs (unchecked), for interactive use (bench/gpu/run.sh: --device cuda).
On CUDA every timed run ends with torch.cuda.synchronize(), and the peak is
torch.cuda.max_memory_allocated (device memory) instead of the process's RSS.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

SHAPES = [(4, 512, 512, 512, 8), (1, 2048, 2048, 1024, 16), (1, 4096, 4096, 512, 8), (32, 128, 128, 256, 4)]
TOLERANCE = 1e-4


def flops(n, l, s, e, causal):
    proj = 2.0 * n * e * e * (2 * l + 2 * s)
    attn = 4.0 * n * l * s * e
    return proj + (attn / 2 if causal else attn)


def essential_bytes(n, l, s, e, cross, need_weights, heads=1):
    """As hmha_bench's: heads = H for per-head weights (N, H, L, S), 1 for averaged."""
    inputs = n * l * e + (n * s * e if cross else 0)
    outputs = n * l * e + (n * heads * l * s if need_weights else 0)
    return 4.0 * (inputs + outputs + 4 * e * e + 4 * e)


def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return -1


def time_runs(fn, warmup, min_reps, min_seconds, max_reps=1000, warm_seconds=0.25):
    """As hmha_bench: at least `warmup` untimed runs and `warm_seconds` of them, then the timed runs."""
    warm, w0 = 0, time.perf_counter()
    while warm < warmup or time.perf_counter() - w0 < warm_seconds:
        fn()
        warm += 1
    times = []
    total = 0.0
    while len(times) < max_reps and (len(times) < min_reps or total < min_seconds):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt * 1e3)
        total += dt
    return statistics.median(times), min(times), max(times), len(times), warm


def rel_diff_file(t, path):
    """max |t - ref| / max |ref|, reading the raw float32 reference in chunks."""
    flat = t.detach().to("cpu").contiguous().view(-1).numpy()
    max_abs, max_ref, done = 0.0, 0.0, 0
    with open(path, "rb") as f:
        while done < flat.size:
            ref = np.fromfile(f, dtype=np.float32, count=min(1 << 20, flat.size - done))
            if ref.size == 0:
                raise RuntimeError(f"{path}: shorter than the output")
            got = flat[done:done + ref.size]
            max_abs = max(max_abs, float(np.max(np.abs(got.astype(np.float64) - ref))))
            max_ref = max(max_ref, float(np.max(np.abs(ref))))
            done += ref.size
    if not np.isfinite(max_abs):
        max_abs = float("inf")
    return max_abs, max_abs / max(max_ref, 1e-30)


DEVICE = "cpu"


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def load(ref, name, shape):
    return torch.from_numpy(np.fromfile(os.path.join(ref, name), dtype=np.float32)).view(*shape).to(DEVICE)


def build(impl, ref, n, l, s, e, h, cross, causal, need_weights, average=True):
    """The module/function under test and its inputs; returns run() -> (out, weights)."""
    query = load(ref, "query.bin", (n, l, e))
    kv = load(ref, "kv.bin", (n, s, e)) if cross else query
    w_in = load(ref, "in_proj_weight.bin", (3 * e, e))
    b_in = load(ref, "in_proj_bias.bin", (3 * e,))
    w_out = load(ref, "out_proj_weight.bin", (e, e))
    b_out = load(ref, "out_proj_bias.bin", (e,))
    if impl == "mha":
        mha = torch.nn.MultiheadAttention(e, h, batch_first=True, device=DEVICE).eval()
        with torch.no_grad():
            mha.in_proj_weight.copy_(w_in)
            mha.in_proj_bias.copy_(b_in)
            mha.out_proj.weight.copy_(w_out)
            mha.out_proj.bias.copy_(b_out)
        del w_in, b_in, w_out, b_out
        # nn.MultiheadAttention needs the mask with is_causal (it is only a hint there).
        mask = torch.ones(l, s, dtype=torch.bool, device=DEVICE).triu(1) if causal else None

        def run():
            r = mha(query, kv, kv, need_weights=need_weights, attn_mask=mask, is_causal=causal,
                    average_attn_weights=average)
            sync()
            return r

        return run
    if impl == "sdpa":
        if need_weights:
            raise ValueError("F.scaled_dot_product_attention returns no attention weights")
        d = e // h
        w_in, b_in = w_in.clone(), b_in.clone()  # own the parameters, as a module would

        def heads(t, rows):
            return t.view(n, rows, h, d).transpose(1, 2)

        def run():
            if not cross:
                q, k, v = F.linear(query, w_in, b_in).chunk(3, dim=-1)
            else:
                q = F.linear(query, w_in[:e], b_in[:e])
                k, v = F.linear(kv, w_in[e:], b_in[e:]).chunk(2, dim=-1)
            o = F.scaled_dot_product_attention(heads(q, l), heads(k, s), heads(v, s), is_causal=causal)
            r = F.linear(o.transpose(1, 2).reshape(n, l, e), w_out, b_out)
            sync()
            return r, None

        return run
    raise ValueError(f"unknown impl {impl!r} (mha or sdpa)")


def run_case(args):
    with open(os.path.join(args.ref, "meta.json")) as f:
        meta = json.load(f)
    n, l, s, e, h = meta["shape"]
    nw, causal, cross = meta["need_weights"], meta["causal"], meta["cross"]
    average = meta.get("average_attn_weights", True)
    impl_name = {"mha": "torch.nn.MultiheadAttention", "sdpa": "torch F.sdpa"}[args.case]
    rec = {"impl": impl_name, "shape": [n, l, s, e, h], "need_weights": nw, "causal": causal, "cross": cross,
           "flops": flops(n, l, s, e, causal),
           "essential_bytes": essential_bytes(n, l, s, e, cross, nw, 1 if average else h),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "device": DEVICE}
    if not average:
        rec["average_attn_weights"] = False
    rss_base = status_kb("VmRSS") * 1024
    if DEVICE == "cuda":
        # Allocated bytes (peak_delta) and what the caching allocator took from
        # the driver (gpu_reserved_delta, comparable with hmha_bench's
        # gpu_peak_delta); the cache emptied first, so a case cannot reuse
        # blocks an earlier case of the same process reserved.
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        rss_base = torch.cuda.memory_allocated()
        reserved_base = torch.cuda.memory_reserved()
    try:
        with torch.inference_mode():
            run = build(args.case, args.ref, n, l, s, e, h, cross, causal, nw, average)
            t_check = time.perf_counter()
            out, weights = run()  # checked, and a warm-up: after one of over 2 s no other (as hmha_bench)
            slow = time.perf_counter() - t_check > 2.0
            abs_out, rel_out = rel_diff_file(out, os.path.join(args.ref, "out.bin"))
            abs_w, rel_w = (rel_diff_file(weights, os.path.join(args.ref, "weights.bin")) if nw else (0.0, 0.0))
            del out, weights
            if not (rel_out <= TOLERANCE and rel_w <= TOLERANCE):
                raise RuntimeError(f"output differs from ours: max abs diff {abs_out:g} (rel {rel_out:g})"
                                   + (f", weights max abs diff {abs_w:g} (rel {rel_w:g})" if nw else ""))
            med, lo, hi, reps, warm = time_runs(run, 0 if slow else 1, args.min_reps, args.min_time,
                                                warm_seconds=0.0 if slow else 0.25)
    except Exception as ex:  # reported, not raised: the report shows why a peer is missing
        rec.update(ok=False, error=f"{type(ex).__name__}: {ex}")
        print(json.dumps(rec), flush=True)
        return
    peak = status_kb("VmHWM") * 1024 if DEVICE == "cpu" else torch.cuda.max_memory_allocated()
    rec.update(ok=True, check="matches", rel_diff_out=rel_out, rel_diff_weights=rel_w, ms=med, min_ms=lo, max_ms=hi,
               reps=reps, warmup=warm + 1, gflops=rec["flops"] / (med * 1e6), rss_base=rss_base, peak_rss=peak,
               peak_delta=peak - rss_base)
    if DEVICE == "cuda":
        rec.update(gpu_reserved_delta=torch.cuda.max_memory_reserved() - reserved_base)
    print(json.dumps(rec), flush=True)


def quick_table(args):
    print(f"torch {torch.__version__}, {DEVICE}, threads {torch.get_num_threads()} (random inputs, unchecked)")
    for n, l, s, e, h in SHAPES:
        mha = torch.nn.MultiheadAttention(e, h, batch_first=True, device=DEVICE).eval()
        x = torch.randn(n, l, e, device=DEVICE)
        with torch.inference_mode():
            for nw in (False, True):
                for causal in (False, True):
                    mask = torch.ones(l, s, dtype=torch.bool, device=DEVICE).triu(1) if causal else None

                    def run():
                        mha(x, x, x, need_weights=nw, attn_mask=mask, is_causal=causal)
                        sync()

                    ms = time_runs(run, 2, args.min_reps, args.min_time)[0]
                    name = f"nn.MHA N{n}_L{l}_S{s}_E{e}_H{h}/{'need_weights' if nw else 'fused'}{'/causal' if causal else ''}"
                    print(f"{name:60s} {ms:9.2f} ms {flops(n, l, s, e, causal) / ms / 1e6:8.1f} GFLOP/s")
            d = e // h
            q, k, v = (torch.randn(n, h, l, d, device=DEVICE) for _ in range(3))
            for causal in (False, True):

                def run():
                    F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    sync()

                ms = time_runs(run, 2, args.min_reps, args.min_time)[0]
                attn = 4.0 * n * l * s * e / (2 if causal else 1)
                name = f"F.sdpa N{n}_L{l}_S{s}_E{e}_H{h}{'/causal' if causal else ''}"
                print(f"{name:60s} {ms:9.2f} ms {attn / ms / 1e6:8.1f} GFLOP/s (attention only)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", choices=["mha", "sdpa"])
    ap.add_argument("--ref", help="directory written by hmha_bench --case ours --dump")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds of timed runs per case (at least)")
    ap.add_argument("--min-reps", type=int, default=3)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch.ones(64).add_(1)  # thread pools and allocator up before the memory baseline
    if args.case:
        if not args.ref:
            sys.exit("--case needs --ref DIR (from hmha_bench --case ours --dump DIR)")
        run_case(args)
    else:
        quick_table(args)


if __name__ == "__main__":
    main()
