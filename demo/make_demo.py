#!/usr/bin/env python3
"""Regenerates the `make run` demo data from real torch.nn.MultiheadAttention.

A small batch_first self-attention: batch 2, L = S = 8, E = 16, 4 heads; the
second sequence is 6 tokens long, so key_padding_mask hides its last 2 keys.

  weights.safetensors   module.state_dict(), saved by safetensors.torch.save_file
  inputs.safetensors    query, key, value (the same tensor: self-attention) and
                        key_padding_mask (BOOL, true = padding)
  expected.safetensors  attn_output and attn_output_weights from PyTorch (eval mode)
  args.txt              the `hmha run` flags matching the module's forward arguments

Run:  scripts/bootstrap_torch.sh && ~/.cache/hmha/torchenv/bin/python demo/make_demo.py
"""

import os

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH, SEQ, EMBED, HEADS = 2, 8, 16, 4
LENGTHS = [8, 6]  # real tokens per sequence; the rest is padding


def main():
    torch.manual_seed(2024)
    mha = torch.nn.MultiheadAttention(EMBED, HEADS, batch_first=True)
    # PyTorch initialises the biases to zero; a trained model's are not.
    with torch.no_grad():
        mha.in_proj_bias.normal_(0.0, 0.1)
        mha.out_proj.bias.normal_(0.0, 0.1)
    mha.eval()

    x = torch.randn(BATCH, SEQ, EMBED)  # token embeddings, (N, L, E)
    key_padding_mask = torch.arange(SEQ)[None, :] >= torch.tensor(LENGTHS)[:, None]  # (N, S)

    with torch.inference_mode():
        out, weights = mha(x, x, x, key_padding_mask=key_padding_mask)  # need_weights, averaged
        # Cross-check in float64 so the expected values are not a float32 accident.
        m64 = mha.to(torch.float64)
        out64, w64 = m64(x.double(), x.double(), x.double(), key_padding_mask=key_padding_mask)
        mha.to(torch.float32)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all()
    assert torch.allclose(out.double(), out64, rtol=1e-5, atol=1e-6)
    assert torch.allclose(weights.double(), w64, rtol=1e-5, atol=1e-6)
    assert bool((weights[1, :, LENGTHS[1]:] == 0).all()), "padded keys must get zero weight"

    save_file({k: v.contiguous() for k, v in mha.state_dict().items()},
              os.path.join(HERE, "weights.safetensors"))
    save_file({"query": x.clone(), "key": x.clone(), "value": x.clone(),
               "key_padding_mask": key_padding_mask.contiguous()},
              os.path.join(HERE, "inputs.safetensors"))
    save_file({"attn_output": out.contiguous(), "attn_output_weights": weights.contiguous()},
              os.path.join(HERE, "expected.safetensors"))
    with open(os.path.join(HERE, "args.txt"), "w") as f:
        f.write(f"--num-heads {HEADS} --batch-first\n")

    print(f"demo: N={BATCH} L=S={SEQ} E={EMBED} H={HEADS} batch_first, lengths {LENGTHS}; "
          f"attn_output {tuple(out.shape)}, attn_output_weights {tuple(weights.shape)} "
          f"(torch {torch.__version__.split('+')[0]})")
    for name in ("weights", "inputs", "expected"):
        print(f"  demo/{name}.safetensors  {os.path.getsize(os.path.join(HERE, name + '.safetensors'))} bytes")


if __name__ == "__main__":
    main()
