"""PyTorch peer timings for bench/: nn.MultiheadAttention (eval, inference_mode)
and F.scaled_dot_product_attention at the same shapes as build/bench/hmha_bench.

    $(scripts/bootstrap_torch.sh) bench/peers/torch_mha.py [--threads 2] [--reps 10]

Prints one line per case: the median ms over --reps timed runs after warm-up,
and GFLOP/s with the same flops formula as hmha_bench.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

SHAPES = [(4, 512, 512, 512, 8), (1, 2048, 2048, 512, 8)]


def flops(n, l, s, e, causal):
    proj = 2.0 * n * e * e * (2 * l + 2 * s)
    attn = 4.0 * n * l * s * e
    return proj + (attn / 2 if causal else attn)


def median_ms(fn, reps):
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    for n, l, s, e, h in SHAPES:
        mha = torch.nn.MultiheadAttention(e, h, batch_first=True).eval()
        x = torch.randn(n, l, e)
        causal_mask = torch.ones(l, s, dtype=torch.bool).triu(1)
        with torch.inference_mode():
            for need_weights in (False, True):
                for causal in (False, True):
                    mask = causal_mask if causal else None

                    def run():
                        return mha(x, x, x, need_weights=need_weights, attn_mask=mask, is_causal=causal)

                    ms = median_ms(run, args.reps)
                    name = f"nn.MHA N{n}_L{l}_S{s}_E{e}_H{h}/{'need_weights' if need_weights else 'fused'}{'/causal' if causal else ''}"
                    print(f"{name:60s} {ms:9.2f} ms {flops(n, l, s, e, causal) / ms / 1e6:8.1f} GFLOP/s")
            d = e // h
            q, k, v = (torch.randn(n, h, l, d) for _ in range(3))
            for causal in (False, True):
                ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal), args.reps)
                attn = 4.0 * n * l * s * e / (2 if causal else 1)
                name = f"F.sdpa N{n}_L{l}_S{s}_E{e}_H{h}{'/causal' if causal else ''}"
                print(f"{name:60s} {ms:9.2f} ms {attn / ms / 1e6:8.1f} GFLOP/s (attention only)")


if __name__ == "__main__":
    main()
