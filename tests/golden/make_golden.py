#!/usr/bin/env python3
"""Golden fixtures from real torch.nn.MultiheadAttention (eval mode, float32).

Each case becomes tests/golden/<name>.safetensors holding:

  * the module's state_dict under PyTorch's own names (in_proj_weight or
    q/k/v_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias, bias_k,
    bias_v: whichever the module has);
  * the inputs `query`, `key`, `value`, optional `key_padding_mask` and
    `attn_mask` (BOOL or F32);
  * the expected `attn_output` and, when need_weights, `attn_output_weights`;
  * the forward options twice: as strings in `__metadata__` (for people) and as
    1-element F32 tensors `opt.<name>` (for tests/test_golden.cpp, which reads
    tensors only).

Where SPEC.md deliberately differs from nn.MultiheadAttention the expected
values follow SPEC.md:
  * is_causal without attn_mask: PyTorch refuses it, so the expected output is
    computed with the explicit top-left causal mask (True = hidden = triu(1)),
    and the fixture stores no attn_mask (or only the user's one) plus
    opt.is_causal = 1. With a user attn_mask, torch gets the union of both.
  * fully hidden rows (NaN in PyTorch) are avoided here; tests elsewhere cover
    them.

Every expected tensor is also checked against the same module in float64 and,
for float32, with PyTorch's MHA fast path disabled, so a fixture never encodes
a fast-path quirk or a float32 accident.

Run:  scripts/bootstrap_torch.sh   # prints the venv's python
      ~/.cache/hmha/torchenv/bin/python tests/golden/make_golden.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import zlib
from typing import Optional

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))

# The golden test's tolerance (tests/test_golden.cpp): |got - exp| <= ATOL + RTOL*|exp|.
ATOL, RTOL = 1e-5, 1e-4
# How far torch float32 may sit from torch float64, as a fraction of that tolerance,
# so that any implementation within SPEC.md's accuracy of float64 passes.
HEADROOM = 0.25
MAX_TOTAL_BYTES = 2 * 1024 * 1024


@dataclasses.dataclass
class Case:
    name: str
    desc: str
    E: int
    H: int
    L: int
    S: int
    N: Optional[int]  # None: unbatched inputs
    kdim: Optional[int] = None
    vdim: Optional[int] = None
    bias: bool = True
    add_bias_kv: bool = False
    add_zero_attn: bool = False
    batch_first: bool = False
    same_qkv: bool = False  # self-attention: query is key is value
    need_weights: bool = True
    average_attn_weights: bool = True
    is_causal: bool = False
    # attn_mask: None, "bool2d", "float2d", "bool3d", "float3d"
    attn_mask: Optional[str] = None
    # key_padding_mask: None, "bool", "float"
    kpm: Optional[str] = None
    # Rows (query indices) whose original S keys are all hidden by attn_mask, so
    # only the appended bias_k / zero key is visible.
    appended_only_rows: tuple = ()
    input_scale: float = 1.0
    hide_prob: float = 0.3
    float_hidden: float = -math.inf  # what a float mask uses for "hidden"


CASES = [
    # --- layouts and shapes -------------------------------------------------------
    Case("packed_seq_first", "packed in_proj, (L,N,E) inputs, distinct q/k/v, averaged weights",
         E=8, H=2, L=5, S=5, N=3),
    Case("packed_batch_first_cross", "batch_first cross-attention, S != L",
         E=8, H=2, L=4, S=6, N=2, batch_first=True),
    Case("self_attn_same_tensor_bf_noweights", "self-attention, query is key is value, batch_first, "
         "need_weights=false (PyTorch fast path)", E=16, H=4, L=7, S=7, N=2, batch_first=True,
         same_qkv=True, need_weights=False),
    Case("self_attn_same_tensor_bf_weights", "self-attention, query is key is value, batch_first, "
         "averaged weights (PyTorch fast path)", E=16, H=4, L=6, S=6, N=3, batch_first=True,
         same_qkv=True),
    Case("self_attn_same_tensor_seq_per_head", "self-attention, query is key is value, (L,N,E), "
         "per-head weights", E=12, H=3, L=5, S=5, N=2, same_qkv=True, average_attn_weights=False),
    Case("no_bias", "bias=false: no in_proj_bias, no out_proj.bias", E=12, H=3, L=4, S=5, N=2,
         bias=False),
    Case("single_head", "H=1, D=4", E=4, H=1, L=3, S=4, N=2),
    Case("head_dim_1", "H=E=8: head_dim 1", E=8, H=8, L=3, S=5, N=1, average_attn_weights=False),
    Case("head_dim_2_e6", "E=6, H=3: head_dim 2", E=6, H=3, L=4, S=3, N=2, batch_first=True),
    Case("odd_sizes_larger", "L=17, S=13, N=2, E=16, H=4: odd lengths past small tiles",
         E=16, H=4, L=17, S=13, N=2, batch_first=True),
    Case("per_head_weights_seq", "average_attn_weights=false, (L,N,E)", E=8, H=4, L=3, S=6, N=2,
         average_attn_weights=False),
    Case("need_weights_false_seq", "need_weights=false, (L,N,E) cross-attention", E=12, H=2,
         L=5, S=9, N=2, need_weights=False),
    Case("large_logits", "inputs scaled x6: logits up to ~200, tests the max-subtracted softmax",
         E=8, H=2, L=4, S=5, N=2, input_scale=6.0),
    # --- separate projections (kdim / vdim) ---------------------------------------------
    Case("separate_kdim_vdim", "kdim=5, vdim=7: q/k/v_proj_weight", E=8, H=2, L=3, S=6, N=2,
         kdim=5, vdim=7),
    Case("separate_kdim_only", "kdim=6, vdim=E: separate weights, batch_first", E=8, H=2, L=4,
         S=5, N=2, kdim=6, vdim=8, batch_first=True),
    Case("separate_vdim_only_no_bias", "kdim=E, vdim=3, bias=false, per-head weights", E=8, H=2,
         L=3, S=4, N=2, kdim=8, vdim=3, bias=False, average_attn_weights=False),
    # --- add_bias_kv / add_zero_attn ------------------------------------------------------
    Case("bias_kv", "add_bias_kv: S' = S+1", E=8, H=2, L=4, S=5, N=2, add_bias_kv=True),
    Case("zero_attn", "add_zero_attn: S' = S+1", E=8, H=2, L=4, S=5, N=2, add_zero_attn=True,
         batch_first=True),
    Case("bias_kv_zero_attn_per_head", "add_bias_kv and add_zero_attn: S' = S+2, per-head weights",
         E=12, H=3, L=3, S=4, N=2, add_bias_kv=True, add_zero_attn=True,
         average_attn_weights=False),
    Case("bias_kv_zero_attn_separate_kdim", "add_bias_kv + add_zero_attn with kdim=5, vdim=3, "
         "batch_first", E=8, H=2, L=4, S=3, N=2, kdim=5, vdim=3, add_bias_kv=True,
         add_zero_attn=True, batch_first=True),
    Case("bias_kv_no_bias_masks", "add_bias_kv, bias=false, bool attn_mask + bool kpm "
         "(appended key never masked)", E=8, H=2, L=4, S=5, N=2, bias=False, add_bias_kv=True,
         attn_mask="bool2d", kpm="bool"),
    Case("bias_kv_only_visible_row", "add_bias_kv; bool attn_mask hides every original key of "
         "row 1, so that row sees only bias_k", E=8, H=2, L=4, S=5, N=2, add_bias_kv=True,
         attn_mask="bool2d", appended_only_rows=(1,)),
    Case("zero_attn_only_visible_row", "add_zero_attn; float attn_mask -inf on every original key "
         "of rows 0 and 2 (per head, 3-D), so they see only the zero key", E=8, H=2, L=3, S=4, N=2,
         add_zero_attn=True, attn_mask="float3d", appended_only_rows=(0, 2),
         average_attn_weights=False),
    Case("bias_kv_zero_attn_kpm_hides_all", "add_bias_kv + add_zero_attn, float kpm; bool 2-D "
         "attn_mask hides every original key of row 2", E=8, H=2, L=3, S=4, N=2,
         add_bias_kv=True, add_zero_attn=True, attn_mask="bool2d", kpm="float",
         appended_only_rows=(2,), batch_first=True),
    # --- unbatched ------------------------------------------------------------------------
    Case("unbatched_basic", "unbatched (L,E) / (S,E) inputs, averaged weights", E=8, H=2, L=4,
         S=6, N=None),
    Case("unbatched_batch_first_ignored", "unbatched with batch_first=true (ignored for 2-D input)",
         E=8, H=2, L=5, S=3, N=None, batch_first=True),
    Case("unbatched_3d_bool_mask_per_head", "unbatched, bool attn_mask (H,L,S), per-head weights",
         E=8, H=2, L=4, S=5, N=None, attn_mask="bool3d", average_attn_weights=False),
    Case("unbatched_kpm_bias_kv_zero_attn", "unbatched, kpm (S), add_bias_kv + add_zero_attn",
         E=8, H=4, L=3, S=5, N=None, kpm="bool", add_bias_kv=True, add_zero_attn=True),
    Case("unbatched_separate_float_masks", "unbatched, kdim=3 vdim=5, float attn_mask (L,S) + "
         "float kpm (S)", E=6, H=2, L=4, S=4, N=None, kdim=3, vdim=5, attn_mask="float2d",
         kpm="float"),
    Case("unbatched_causal", "unbatched, is_causal alone", E=8, H=2, L=5, S=5, N=None,
         is_causal=True),
    Case("unbatched_L1_S1", "unbatched, L=S=1", E=4, H=2, L=1, S=1, N=None),
    # --- attn_mask ------------------------------------------------------------------------
    Case("attn_mask_bool_2d", "bool attn_mask (L,S): true = hidden", E=8, H=2, L=5, S=6, N=2,
         attn_mask="bool2d"),
    Case("attn_mask_float_2d", "float attn_mask (L,S): added, finite values and -inf", E=8, H=2,
         L=5, S=6, N=2, attn_mask="float2d", batch_first=True),
    Case("attn_mask_bool_3d_bf", "bool attn_mask (N*H,L,S) batch-major, batch_first, per-head "
         "weights", E=8, H=2, L=4, S=5, N=3, attn_mask="bool3d", batch_first=True,
         average_attn_weights=False),
    Case("attn_mask_float_3d", "float attn_mask (N*H,L,S) batch-major", E=12, H=3, L=4, S=4, N=2,
         attn_mask="float3d"),
    Case("attn_mask_float_finite_large", "float attn_mask with -1e9 instead of -inf", E=8, H=2,
         L=4, S=6, N=2, attn_mask="float2d", float_hidden=-1e9),
    # --- key_padding_mask -------------------------------------------------------------------
    Case("kpm_bool", "bool key_padding_mask (N,S)", E=8, H=2, L=4, S=6, N=3, kpm="bool"),
    Case("kpm_float_bf", "float key_padding_mask (N,S), batch_first", E=8, H=2, L=4, S=6, N=2,
         kpm="float", batch_first=True),
    Case("kpm_bool_self_attn_fastpath", "bool kpm, self-attention query is key is value, "
         "batch_first, need_weights=false (fast path)", E=8, H=2, L=6, S=6, N=2, kpm="bool",
         same_qkv=True, batch_first=True, need_weights=False),
    # --- mask combinations -------------------------------------------------------------------
    Case("combo_bool_kpm_bool_3d_mask", "bool kpm + bool attn_mask (N*H,L,S)", E=8, H=2, L=5,
         S=5, N=2, kpm="bool", attn_mask="bool3d"),
    Case("combo_float_kpm_float_2d_mask", "float kpm + float attn_mask (L,S), per-head weights",
         E=8, H=2, L=4, S=6, N=2, kpm="float", attn_mask="float2d", average_attn_weights=False),
    Case("combo_bool_kpm_float_mask", "bool kpm + float attn_mask (mixed dtypes)", E=8, H=2, L=4,
         S=5, N=2, kpm="bool", attn_mask="float2d", batch_first=True),
    Case("combo_float_kpm_bool_3d_mask", "float kpm + bool attn_mask (N*H,L,S) (mixed dtypes), "
         "need_weights=false", E=8, H=2, L=3, S=5, N=2, kpm="float", attn_mask="bool3d",
         need_weights=False),
    # --- is_causal -------------------------------------------------------------------------
    Case("causal_self", "is_causal alone (no attn_mask), L=S", E=8, H=2, L=6, S=6, N=2,
         is_causal=True),
    Case("causal_self_same_tensor_noweights", "is_causal alone, query is key is value, "
         "batch_first, need_weights=false", E=16, H=4, L=9, S=9, N=2, is_causal=True,
         same_qkv=True, batch_first=True, need_weights=False),
    Case("causal_L_gt_S", "is_causal, L=7 > S=4, top-left aligned", E=8, H=2, L=7, S=4, N=2,
         is_causal=True, average_attn_weights=False),
    Case("causal_L_lt_S", "is_causal, L=3 < S=8, top-left aligned", E=8, H=2, L=3, S=8, N=2,
         is_causal=True, batch_first=True),
    Case("causal_with_bool_mask", "is_causal + bool attn_mask (L,S): union of both", E=8, H=2,
         L=6, S=6, N=2, is_causal=True, attn_mask="bool2d"),
    Case("causal_with_float_3d_mask_kpm", "is_causal + float attn_mask (N*H,L,S) + bool kpm, "
         "need_weights=false", E=8, H=2, L=5, S=5, N=2, is_causal=True, attn_mask="float3d",
         kpm="bool", need_weights=False),
    Case("causal_bias_kv_zero_attn", "is_causal + add_bias_kv + add_zero_attn: appended keys "
         "never causally hidden", E=8, H=2, L=4, S=4, N=2, is_causal=True, add_bias_kv=True,
         add_zero_attn=True, average_attn_weights=False),
    # --- L = 1 / S = 1 -----------------------------------------------------------------------
    Case("L1", "L=1 (single query), S=9", E=8, H=2, L=1, S=9, N=2),
    Case("S1", "S=1 (single key): weights all 1", E=8, H=2, L=5, S=1, N=2, batch_first=True),
    Case("S1_bias_kv", "S=1 with add_bias_kv: S'=2", E=8, H=2, L=3, S=1, N=2, add_bias_kv=True),
    Case("L1_causal_per_head", "L=1, S=4 is_causal: only key 0 visible", E=8, H=2, L=1, S=4, N=2,
         is_causal=True, average_attn_weights=False),
]


def _rand(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen, dtype=torch.float32) * scale


def make_module(c: Case, gen):
    mha = torch.nn.MultiheadAttention(c.E, c.H, dropout=0.1, bias=c.bias,
                                      add_bias_kv=c.add_bias_kv, add_zero_attn=c.add_zero_attn,
                                      kdim=c.kdim, vdim=c.vdim, batch_first=c.batch_first)
    # Default init zeroes the biases; draw every parameter so each one matters.
    with torch.no_grad():
        for name, p in mha.named_parameters():
            if p.dim() == 2:
                p.copy_(_rand(gen, *p.shape, scale=1.0 / math.sqrt(p.shape[1])))
            else:
                p.copy_(_rand(gen, *p.shape, scale=0.5))
    mha.eval()
    return mha


def make_masks(c: Case, gen):
    """(attn_mask, key_padding_mask) as the user passes them, with no fully hidden
    row once combined with the causal rule (except appended_only_rows)."""
    N = c.N or 1
    L, S, H = c.L, c.S, c.H
    # hidden[n, h, i, j] for the original S keys.
    causal = torch.ones(L, S, dtype=torch.bool).triu(1) if c.is_causal else torch.zeros(L, S, dtype=torch.bool)

    def rand_hidden(*shape):
        return torch.rand(*shape, generator=gen) < c.hide_prob

    def rand_float(hidden):
        vals = torch.rand(*hidden.shape, generator=gen) * 3.0 - 2.0  # [-2, 1)
        return torch.where(hidden, torch.tensor(c.float_hidden), vals)

    am_hidden = None
    if c.attn_mask in ("bool2d", "float2d"):
        am_hidden = rand_hidden(L, S)
    elif c.attn_mask in ("bool3d", "float3d"):
        am_hidden = rand_hidden(N * H, L, S)
    kpm_hidden = rand_hidden(N, S) if c.kpm else None

    def combined():
        h = causal.expand(N, H, L, S).clone()
        if am_hidden is not None:
            h |= am_hidden.expand(N, H, L, S) if am_hidden.dim() == 2 else am_hidden.view(N, H, L, S)
        if kpm_hidden is not None:
            h |= kpm_hidden.view(N, 1, 1, S)
        return h

    # Unhide one causally allowed key in each fully hidden row, in every mask.
    while True:
        h = combined()
        rows = h.all(dim=-1).nonzero().tolist()
        if not rows:
            break
        n, hh, i = rows[0]
        allowed = [j for j in range(S) if not causal[i, j]]
        j = allowed[int(torch.randint(len(allowed), (1,), generator=gen))]
        if am_hidden is not None:
            if am_hidden.dim() == 2:
                am_hidden[i, j] = False
            else:
                am_hidden[n * H + hh, i, j] = False
        if kpm_hidden is not None:
            kpm_hidden[n, j] = False

    for i in c.appended_only_rows:
        assert c.add_bias_kv or c.add_zero_attn, c.name
        am_hidden[..., i, :] = True

    attn_mask = kpm = None
    if c.attn_mask:
        attn_mask = am_hidden if c.attn_mask.startswith("bool") else rand_float(am_hidden)
    if c.kpm:
        kpm = kpm_hidden if c.kpm == "bool" else rand_float(kpm_hidden)
    if c.N is None:  # unbatched: kpm (S), 3-D attn_mask (H, L, S)
        kpm = None if kpm is None else kpm[0]
    return attn_mask, kpm


def torch_attn_mask(c: Case, attn_mask):
    """The mask torch gets: the user's attn_mask, with the causal rule folded in."""
    if not c.is_causal:
        return attn_mask
    causal = torch.ones(c.L, c.S, dtype=torch.bool).triu(1)
    if attn_mask is None:
        return causal
    if attn_mask.dtype == torch.bool:
        return attn_mask | causal
    return attn_mask.masked_fill(causal, -math.inf)


def run_torch(c: Case, mha, q, k, v, attn_mask, kpm, dtype=torch.float32, fastpath=True):
    m = mha if dtype == torch.float32 else _cast_module(mha, dtype)

    def cast(t):
        if t is None or t.dtype == torch.bool:
            return t
        return t.to(dtype)

    q, k, v = cast(q), cast(k), cast(v)
    if c.same_qkv:
        k = v = q
    prev = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        with torch.inference_mode():
            out, w = m(q, k, v, key_padding_mask=cast(kpm), need_weights=c.need_weights,
                       attn_mask=cast(torch_attn_mask(c, attn_mask)),
                       average_attn_weights=c.average_attn_weights, is_causal=False)
    finally:
        torch.backends.mha.set_fastpath_enabled(prev)
    return out, w


def _cast_module(mha, dtype):
    import copy
    m = copy.deepcopy(mha).to(dtype)
    m.eval()
    return m


def expected_shapes(c: Case):
    Sp = c.S + int(c.add_bias_kv) + int(c.add_zero_attn)
    if c.N is None:
        out = (c.L, c.E)
        w = (c.L, Sp) if c.average_attn_weights else (c.H, c.L, Sp)
    else:
        out = (c.N, c.L, c.E) if c.batch_first else (c.L, c.N, c.E)
        w = (c.N, c.L, Sp) if c.average_attn_weights else (c.N, c.H, c.L, Sp)
    return out, w


def check_close(c: Case, what, got, ref, frac):
    ref32 = ref.to(torch.float32)
    err = (got - ref32).abs()
    bound = frac * (ATOL + RTOL * ref32.abs())
    if not bool((err <= bound).all()):
        idx = int((err - bound).argmax())
        raise SystemExit(f"{c.name}: {what} off by {float(err.flatten()[idx]):.3g} at flat index {idx} "
                         f"(bound {float(bound.flatten()[idx]):.3g})")
    return float(err.max()) if err.numel() else 0.0


def spec_reference(t):
    """SPEC.md's semantics written out in float64 from a fixture's stored tensors
    alone: checks that what the C++ test will read (opt.* included) reproduces
    the expected values, independently of nn.MultiheadAttention."""
    d = {k: v.to(torch.float64) if v.dtype != torch.bool else v for k, v in t.items()}
    opt = {k[4:]: float(v.item()) for k, v in t.items() if k.startswith("opt.")}
    H, bf = int(opt["num_heads"]), bool(opt["batch_first"])
    q, k, v = d["query"], d["key"], d["value"]
    batched = q.dim() == 3
    if not batched:
        q, k, v = q[None], k[None], v[None]
    elif not bf:
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    N, L, E = q.shape
    S, D = k.shape[1], E // H
    if "in_proj_weight" in d:
        wq, wk, wv = d["in_proj_weight"].chunk(3)
    else:
        wq, wk, wv = d["q_proj_weight"], d["k_proj_weight"], d["v_proj_weight"]
    bq, bk, bv = d["in_proj_bias"].chunk(3) if "in_proj_bias" in d else (0.0, 0.0, 0.0)
    q, k, v = q @ wq.T + bq, k @ wk.T + bk, v @ wv.T + bv
    if "bias_k" in d:
        k = torch.cat([k, d["bias_k"].expand(N, 1, E)], 1)
        v = torch.cat([v, d["bias_v"].expand(N, 1, E)], 1)

    def heads(x):
        return x.view(N, x.shape[1], H, D).transpose(1, 2)

    q, k, v = heads(q), heads(k), heads(v)
    if opt["add_zero_attn"]:
        k = torch.cat([k, torch.zeros(N, H, 1, D, dtype=k.dtype)], 2)
        v = torch.cat([v, torch.zeros(N, H, 1, D, dtype=v.dtype)], 2)
    Sp = k.shape[2]
    scores = (q / math.sqrt(D)) @ k.transpose(-1, -2)
    add = torch.zeros(N, H, L, Sp, dtype=torch.float64)
    hidden = torch.zeros(N, H, L, Sp, dtype=torch.bool)

    def apply(mask, view):
        m = view(mask)
        if mask.dtype == torch.bool:
            hidden[..., :S] |= m
        else:
            add[..., :S] += m

    if "attn_mask" in d:
        am = d["attn_mask"]
        apply(am, lambda m: m.expand(N, H, L, S) if m.dim() == 2 else m.reshape(N, H, L, S))
    if "key_padding_mask" in d:
        apply(d["key_padding_mask"], lambda m: m.reshape(N, 1, 1, S).expand(N, H, L, S))
    if opt["is_causal"]:
        hidden[..., :S] |= torch.ones(L, S, dtype=torch.bool).triu(1)
    scores = (scores + add).masked_fill(hidden, -math.inf)
    full = torch.isneginf(scores).all(-1, keepdim=True)
    w = torch.softmax(scores.masked_fill(full, 0.0), -1).masked_fill(full, 0.0)
    o = (w @ v).transpose(1, 2).reshape(N, L, E) @ d["out_proj.weight"].T
    if "out_proj.bias" in d:
        o = o + d["out_proj.bias"]
    if opt["average_attn_weights"]:
        w = w.mean(1)
    if not batched:
        return o[0], w[0]
    return (o if bf else o.transpose(0, 1)), w


def build(c: Case):
    gen = torch.Generator().manual_seed(zlib.crc32(c.name.encode()))
    mha = make_module(c, gen)
    kdim, vdim = c.kdim or c.E, c.vdim or c.E

    def seq(S, d):
        if c.N is None:
            return (S, d)
        return (c.N, S, d) if c.batch_first else (S, c.N, d)

    q = _rand(gen, *seq(c.L, c.E), scale=c.input_scale)
    if c.same_qkv:
        assert c.L == c.S and kdim == vdim == c.E, c.name
        k = v = q
    else:
        k = _rand(gen, *seq(c.S, kdim), scale=c.input_scale)
        v = _rand(gen, *seq(c.S, vdim), scale=c.input_scale)
    attn_mask, kpm = make_masks(c, gen)

    out, w = run_torch(c, mha, q, k, v, attn_mask, kpm)
    out_slow, w_slow = run_torch(c, mha, q, k, v, attn_mask, kpm, fastpath=False)
    out64, w64 = run_torch(c, mha, q, k, v, attn_mask, kpm, dtype=torch.float64)

    out_shape, w_shape = expected_shapes(c)
    assert tuple(out.shape) == out_shape, (c.name, out.shape, out_shape)
    assert not torch.isnan(out).any() and torch.isfinite(out).all(), f"{c.name}: non-finite attn_output"
    err = check_close(c, "attn_output vs float64", out, out64, HEADROOM)
    check_close(c, "attn_output vs no-fast-path", out, out_slow, HEADROOM)
    if c.need_weights:
        assert tuple(w.shape) == w_shape, (c.name, w.shape, w_shape)
        assert torch.isfinite(w).all(), f"{c.name}: non-finite attn_output_weights"
        err = max(err, check_close(c, "weights vs float64", w, w64, HEADROOM))
        check_close(c, "weights vs no-fast-path", w, w_slow, HEADROOM)
    else:
        assert w is None, c.name

    tensors = {name: t.detach().clone().contiguous() for name, t in mha.state_dict().items()}
    tensors["query"] = q.clone()
    tensors["key"] = k.clone()
    tensors["value"] = v.clone()
    if attn_mask is not None:
        tensors["attn_mask"] = attn_mask.clone()
    if kpm is not None:
        tensors["key_padding_mask"] = kpm.clone()
    tensors["attn_output"] = out.clone()
    if c.need_weights:
        tensors["attn_output_weights"] = w.clone()

    opts = {
        "num_heads": c.H,
        "batch_first": c.batch_first,
        "add_zero_attn": c.add_zero_attn,
        "need_weights": c.need_weights,
        "average_attn_weights": c.average_attn_weights,
        "is_causal": c.is_causal,
        "same_qkv": c.same_qkv,
        # What Options::from_state_dict must infer from the weights:
        "embed_dim": c.E,
        "kdim": kdim,
        "vdim": vdim,
        "bias": c.bias,
        "add_bias_kv": c.add_bias_kv,
    }
    for key, val in opts.items():
        tensors[f"opt.{key}"] = torch.tensor([float(val)], dtype=torch.float32)
    meta = {key: (str(val).lower() if isinstance(val, bool) else str(val)) for key, val in opts.items()}
    meta["description"] = c.desc
    meta["torch_version"] = torch.__version__.split("+")[0]
    meta["generator"] = "tests/golden/make_golden.py"
    tensors = {name: t.contiguous() for name, t in tensors.items()}

    ref_out, ref_w = spec_reference(tensors)
    check_close(c, "attn_output vs SPEC reference", out, ref_out, HEADROOM)
    if c.need_weights:
        check_close(c, "weights vs SPEC reference", w, ref_w, HEADROOM)
    return tensors, meta, err


def save_deterministic(tensors, path, metadata):
    """safetensors.torch.save_file, with the __metadata__ keys sorted: the library
    writes them in hash-map order, and regenerating should give identical bytes."""
    save_file(tensors, path, metadata=metadata)
    with open(path, "rb") as f:
        blob = f.read()
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    assert len(text) <= n, path
    with open(path, "wb") as f:
        f.write(blob[:8] + text + b" " * (n - len(text)) + blob[8 + n:])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=HERE, help="output folder (default: this script's folder)")
    args = ap.parse_args()

    torch.use_deterministic_algorithms(True)
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "duplicate fixture names"

    # Drop fixtures of cases that no longer exist, so the folder is exactly CASES.
    for f in os.listdir(args.out):
        if f.endswith(".safetensors") and f[: -len(".safetensors")] not in names:
            os.remove(os.path.join(args.out, f))

    total = 0
    hdr = f"{'fixture':38} {'N':>2} {'L':>3} {'S':>3} {'E':>3} {'H':>2} {'kdim/vdim':>9} {'flags':32} {'masks':18} {'bytes':>6} {'f32-f64':>8}"
    print(hdr)
    print("-" * len(hdr))
    for c in CASES:
        tensors, meta, err = build(c)
        path = os.path.join(args.out, f"{c.name}.safetensors")
        save_deterministic(tensors, path, meta)
        size = os.path.getsize(path)
        total += size
        flags = [f for f, on in (("bf", c.batch_first), ("nobias", not c.bias), ("bias_kv", c.add_bias_kv),
                                 ("zero_attn", c.add_zero_attn), ("qkv_same", c.same_qkv),
                                 ("causal", c.is_causal), ("no_w", not c.need_weights),
                                 ("per_head", c.need_weights and not c.average_attn_weights)) if on]
        masks = [m for m in (c.attn_mask and "am:" + c.attn_mask, c.kpm and "kpm:" + c.kpm) if m]
        kv = f"{c.kdim or c.E}/{c.vdim or c.E}" if (c.kdim or c.vdim) else "packed"
        print(f"{c.name:38} {c.N if c.N is not None else '-':>2} {c.L:>3} {c.S:>3} {c.E:>3} {c.H:>2} {kv:>9} "
              f"{','.join(flags):32} {' '.join(masks):18} {size:>6} {err:>8.1e}")
    print("-" * len(hdr))
    print(f"{len(CASES)} fixtures, {total} bytes in {args.out} (torch {torch.__version__})")
    assert total < MAX_TOTAL_BYTES, f"fixtures too large: {total} bytes"


if __name__ == "__main__":
    sys.exit(main())
