"""Ours against PyTorch on one GPU, in one run (issue 4's GPU targets); run by
bench/gpu/run.sh on the GPU machine, with the python that has torch:

    python3 bench/gpu/compare.py --bench .gpu-bundle/hmha_bench --times DIR/gpu-times.jsonl --out DIR

The MHA forward at each shape of issue 4 (need_weights false and true, causal,
and cross-attention at the first shape): ours (`hmha_bench --case ours
--hmha-device=cuda --dump`: inputs already on the device, outputs left there,
every call synchronized), then torch.nn.MultiheadAttention and F.sdpa with
F.linear projections on the same inputs and parameters (torch_mha.run_case,
float32, checked against our output before they are timed).

The SDPA kernel alone, at each shape (no mask): ours from hmha_gpu_tune's
--times (every variant of the sweep, each checked against the CPU kernel; the
first is the untuned defaults, the best is what a build with the tuned file
runs), F.scaled_dot_product_attention on random (N, H, L, D) inputs here;
then the best variant that was right at the shape but failed the sweep's
head_dim-128 check (shared memory), which only a kernel for narrower heads
could use (with the CUDA shared-memory opt-in, runtime/src/
cuda_driver_hooks.h, a variant fails it only above the device's opt-in
limit, 227 KiB a block on an H100).

The kernels against Halide's GPU autoscheduler, at each shape: the untuned
defaults, the tuned winner (the variant with the least time summed over the
shapes, as hmha_gpu_tune picks it) and Anderson2021's schedule for that shape
(hmha_gpu_tune --times, when the bundle was built with them: bundle.sh).

Writes OUT/compare.jsonl (one record per measurement) and prints the tables.
"""
import argparse
import contextlib
import io
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "peers"))
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import torch_mha  # noqa: E402


def cases():
    for shape in torch_mha.SHAPES:
        yield shape, False, False, False
        yield shape, True, False, False
        yield shape, False, True, False
    yield torch_mha.SHAPES[0], False, False, True


def name_of(shape, nw, causal, cross):
    n, l, s, e, h = shape
    return f"N{n}_L{l}_S{s}_E{e}_H{h}" + ("/need_weights" if nw else "/fused") + ("/causal" if causal else "") + (
        "/cross" if cross else "")


def run_ours(bench, shape, nw, causal, cross, ref, min_time, extra=(), check=False, env=None):
    """Ours, dumping its inputs and output into ref, or with check, checked
    against the output dumped there (max |diff| / max |ours| <= 1e-4); env:
    variables set for that run."""
    cmd = [bench, "--case", "ours", "--hmha-device=cuda", "--shape", ",".join(map(str, shape)),
           "--ref" if check else "--dump", ref, "--min-time", str(min_time), "--min-reps", "5"]
    cmd += ["--need-weights"] * nw + ["--causal"] * causal + ["--cross"] * cross + list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        return {"impl": "ours", "ok": False, "error": f"exit {p.returncode}: {p.stderr.strip()[-400:]}"}
    return json.loads(lines[-1])


def run_all(bench, shape, nw, causal, cross, min_time, alt_registers):
    """Ours, then nn.MultiheadAttention and (need_weights=false) F.sdpa on the
    same inputs: {impl: record}. With alt_registers, ours again with the CUDA
    JIT's register cap at that (HMHA_CUDA_MAX_REGISTERS; 0 = none), checked
    against the first."""
    name = name_of(shape, nw, causal, cross)
    ref = os.path.join("/tmp/hmha-compare", name.replace("/", "_"))
    os.makedirs(ref, exist_ok=True)
    got = {"ours": run_ours(bench, shape, nw, causal, cross, ref, min_time)}
    if got["ours"].get("ok") and alt_registers:
        got["ours_regs"] = run_ours(bench, shape, nw, causal, cross, ref, min_time, check=True,
                                    env={"HMHA_CUDA_MAX_REGISTERS": alt_registers})
        got["ours_regs"]["impl"] = f"ours, HMHA_CUDA_MAX_REGISTERS={alt_registers}"
    if got["ours"].get("ok"):
        got["mha"] = run_torch("mha", ref, min_time)
        if not nw:
            got["sdpa"] = run_torch("sdpa", ref, min_time)
    if not nw and got["ours"].get("ok"):
        # need_weights=false through masked_softmax and attend
        # (Options::gpu_attention = Unfused), and with Scratch::PerHead (Q, K
        # and V a group of heads at a time, the output projection in place),
        # beside the default; each checked against the default's output.
        for key, impl, extra in (("ours_unfused", "ours, unfused", ["--gpu-attention", "unfused"]),
                                 ("ours_per_head", "ours, per-head scratch", ["--scratch", "per-head"])):
            got[key] = run_ours(bench, shape, nw, causal, cross, ref, min_time, extra, check=True)
            got[key]["impl"] = impl
    for r in got.values():
        r.update(case=name, device="cuda")
    return name, got


def mib(rec, key):
    """A record's byte count in MiB, or None."""
    return rec[key] / 2**20 if rec.get("ok") and rec.get(key) is not None else None


def run_torch(impl, ref, min_time):
    args = argparse.Namespace(case=impl, ref=ref, min_time=min_time, min_reps=5)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        torch_mha.run_case(args)
    return json.loads(buf.getvalue().strip().splitlines()[-1])


def checked(rec):
    """A hmha_gpu_tune --times record whose variant passed every check (valid) and ran them all
    (complete: its kernel's sweep was not cut by --deadline)."""
    return rec.get("valid", True) and rec.get("complete", True)


def torch_sdpa_ms(shape, min_time):
    n, l, s, e, h = shape
    d = e // h
    q = torch.randn(n, h, l, d, device="cuda")
    k, v = torch.randn(n, h, s, d, device="cuda"), torch.randn(n, h, s, d, device="cuda")
    with torch.inference_mode():
        def run():
            F.scaled_dot_product_attention(q, k, v)
            torch.cuda.synchronize()

        return torch_mha.time_runs(run, 2, 5, min_time)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True, help="hmha_bench built with the CUDA family")
    ap.add_argument("--times", help="hmha_gpu_tune --times output (the SDPA kernel's variants)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--alt-registers", default="0",
                    help="also run ours with HMHA_CUDA_MAX_REGISTERS at this (0: no cap; empty: not)")
    args = ap.parse_args()
    torch_mha.DEVICE = "cuda"
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    recs = []
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, float32 matmul precision "
          f"{torch.get_float32_matmul_precision()} (allow_tf32 {torch.backends.cuda.matmul.allow_tf32})", flush=True)
    rows = []
    # The cases, then (need_weights=false) L = S from 128 to 8192 for
    # time and peak device memory (issue 4's memory target at 8192).
    sweep = [((1, n, n, 512, 8), False, False, False) for n in (128, 512, 1024, 2048, 4096, 8192)]
    for i, (shape, nw, causal, cross) in enumerate(list(cases()) + sweep):
        name, got = run_all(args.bench, shape, nw, causal, cross, args.min_time, args.alt_registers)
        recs.extend(got.values())
        ms = {k: (r["ms"] if r.get("ok") else None) for k, r in got.items()}
        errs = "; ".join(f"{k}: {r.get('error')}" for k, r in got.items() if not r.get("ok"))
        rows.append((name, ms.get("ours"), ms.get("mha"), ms.get("sdpa"), errs, got))
        print(f"{name:45s} " + " ".join(f"{k}={v:.3f}" for k, v in ms.items() if v) + (f"  [{errs}]" if errs else ""),
              flush=True)

    sdpa_rows = []
    variants = []
    if args.times and os.path.exists(args.times):
        with open(args.times) as f:
            variants = [json.loads(ln) for ln in f if ln.strip()]
    ours = [v for v in variants if not v.get("autoscheduler")]
    for shape in torch_mha.SHAPES:
        at = [v for v in ours if v["kernel"] == "sdpa" and v["shape"] == list(shape)]
        mine = [v for v in at if checked(v)]
        default = next((v["ms"] for v in mine if v["params"] == ""), None)
        best = min(mine, key=lambda v: v["ms"]) if mine else None
        # A record exists only where the variant was right at that shape;
        # "valid": false then means a later check failed (head_dim 128's
        # shared memory): what a kernel for narrower heads could run;
        # "complete": false, that hmha_gpu_tune's --deadline cut the sweep
        # before every check had run.
        unbounded = min(at, key=lambda v: v["ms"]) if at else None
        t = torch_sdpa_ms(shape, args.min_time)
        rec = {"impl": "torch F.sdpa (kernel)", "kernel": "sdpa", "shape": list(shape), "ms": t, "ok": True,
               "device": "cuda"}
        recs.append(rec)
        sdpa_rows.append((shape, default, best, t, unbounded))

    with open(os.path.join(args.out, "compare.jsonl"), "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")

    def ratio(peer, ours):
        return f"{peer / ours:5.2f}x" if peer and ours else "   - "

    def fmt(ms):
        return f"{ms:9.3f}" if ms else f"{'-':>9s}"

    def ok_ms(rec):
        return rec.get("ms") if rec.get("ok") else None

    print("\nMHA forward, float32, ms (median); ratio = PyTorch / ours (> 1: ours faster); need_weights=false"
          "\nalso: unfused = ours with Options::gpu_attention = Unfused (masked_softmax + attend), per-head ="
          "\nours with Scratch::PerHead (the memory-lean path); regs=N: ours with the CUDA JIT's register cap"
          "\nat N (HMHA_CUDA_MAX_REGISTERS, 0 = none; the others run under the build's cap, Halide 21's 64"
          "\nunless the tuned cuda.json names one)")
    regs = f"regs={args.alt_registers}" if args.alt_registers else "regs"
    print(f"{'case':45s} {'ours':>9s} {'nn.MHA':>9s} {'ratio':>6s} {'F.sdpa':>9s} {'ratio':>6s} {'unfused':>9s}"
          f" {'per-head':>9s} {regs:>9s}")
    for name, o, m, s, errs, got in rows:
        u, p = ok_ms(got.get("ours_unfused", {})), ok_ms(got.get("ours_per_head", {}))
        r = ok_ms(got.get("ours_regs", {}))
        print(f"{name:45s} {fmt(o)} {fmt(m)} {ratio(m, o)} {fmt(s)} {ratio(s, o)} {fmt(u)} {fmt(p)} {fmt(r)}")
    print("\nPeak device memory, MiB above the process's baseline: ours (and per-head) what Halide took from the"
          "\ndriver (NVML), PyTorch its caching allocator's reserved (and allocated) peak; x ess. = ours /"
          "\n(inputs + outputs + parameters), the memory target's measure")
    def mfmt(m):
        return f"{m:9.1f}" if m is not None else f"{'-':>9s}"

    print(f"{'case':45s} {'ours':>9s} {'x ess.':>6s} {'nn.MHA':>17s} {'F.sdpa':>17s} {'per-head':>9s} {'x ess.':>6s}")
    for name, _, _, _, _, got in rows:
        o, p = got["ours"], got.get("ours_per_head", {})
        ess = o.get("essential_bytes") if o.get("ok") else None

        def x_ess(r):
            d = r.get("gpu_peak_delta") if r.get("ok") else None
            return f"{d / ess:6.2f}" if ess and d is not None else f"{'-':>6s}"

        def torch_mem(k):
            r = got.get(k, {})
            res, alloc = mib(r, "gpu_reserved_delta"), mib(r, "peak_delta")
            return f"{mfmt(res)} ({alloc:5.0f})" if res is not None and alloc is not None else f"{'-':>17s}"

        print(f"{name:45s} {mfmt(mib(o, 'gpu_peak_delta'))} {x_ess(o)} {torch_mem('mha')} {torch_mem('sdpa')}"
              f" {mfmt(mib(p, 'gpu_peak_delta'))} {x_ess(p)}")
    print("\nSDPA kernel alone (no mask), ms; ratio = F.sdpa / ours")
    print(f"{'shape':30s} {'defaults':>9s} {'best':>9s} {'F.sdpa':>9s} {'ratio':>6s}  best params")
    for shape, d, b, t, _ in sdpa_rows:
        bms = b["ms"] if b else None
        print(f"{str(shape):30s} {fmt(d)} {fmt(bms)} {fmt(t)} {ratio(t, bms)}  {b['params'] if b else ''}"
              + (f" (register cap {b['max_registers']})" if b and "max_registers" in b else ""))
    print("\n... and the best variant right at that shape but not at head_dim 128 (too much shared memory"
          "\nthere): what a second sdpa kernel for heads up to 64 would run")
    for shape, _, b, t, u in sdpa_rows:
        if u and b and u is not b and not u.get("valid", True):
            print(f"{str(shape):30s} {fmt(u['ms'])} ({b['ms'] / u['ms']:4.2f}x the best) {ratio(t, u['ms'])} F.sdpa"
                  f"  {u['params']}")
    print_autoscheduler_table(variants, fmt, ratio)


def print_autoscheduler_table(variants, fmt, ratio):
    """Each kernel at each shape: defaults, the tuned winner, and every
    autoscheduler's schedule for that shape; ratio = autoscheduled / tuned."""
    peers = sorted({v["autoscheduler"] for v in variants if v.get("autoscheduler")})
    if not peers:
        return
    print("\nKernels against Halide's autoscheduler, ms; ratio = autoscheduled / tuned (> 1: tuned faster)")
    print(f"{'kernel':15s} {'shape':26s} {'defaults':>9s} {'tuned':>9s} " +
          " ".join(f"{p:>12s} {'ratio':>6s}" for p in peers))
    for kernel in dict.fromkeys(v["kernel"] for v in variants):
        ours = [v for v in variants if v["kernel"] == kernel and not v.get("autoscheduler")]
        valid = {}  # (params, register cap) -> records: a sweep per cap (run.sh, HMHA_GPU_CAPS) times each
        for v in ours:
            valid.setdefault((v["params"], v.get("max_registers")), []).append(v)
        defaults = next((k for k in valid if k[0] == ""), None)
        shapes = list(dict.fromkeys(tuple(v["shape"]) for v in ours))
        # The winner: valid at every shape, least summed time (hmha_gpu_tune's rule).
        full = {p: vs for p, vs in valid.items() if len(vs) == len(shapes) and all(checked(v) for v in vs)}
        winner = min(full, key=lambda p: sum(v["ms"] for v in full[p])) if full else None
        for shape in shapes:
            def at(params):
                return next((v["ms"] for v in valid.get(params, []) if tuple(v["shape"]) == shape and v["valid"]),
                            None)
            tuned = at(winner) if winner is not None else None
            cells = []
            for p in peers:
                a = next((v["ms"] for v in variants if v.get("autoscheduler") == p and v["kernel"] == kernel
                          and tuple(v["shape"]) == shape and v["valid"]), None)
                cells.append(f"{fmt(a):>12s} {ratio(a, tuned)}")
            print(f"{kernel:15s} {str(list(shape)):26s} {fmt(at(defaults))} {fmt(tuned)} " + " ".join(cells))
    print("(-: the autoscheduler failed to schedule the kernel, or its kernel failed its check: gpu-tune.log says how)")


if __name__ == "__main__":
    main()
