// The masked, scaled attention score, shared by the fused SDPA and the
// masked-softmax generators. Algorithm only: schedules live in schedules/.
//
// Buffers are Halide views of PyTorch tensors, innermost dimension first:
//   q (D, H, L, N), k (D, H, S', N)      projected queries/keys, heads split by strides
//   attn_mask (S, L, H, N) float, added  a 2-D mask is broadcast with zero strides
//   attn_mask_bool (S, L, H, N) uint8    nonzero = may not attend
//   key_padding (S, N) float, added      bool masks arrive as 0 / -inf
// S' >= S: keys at j >= S (bias_k, zero_attn) are never masked.
// has_masks: whether any of the three masks is real (false: all are zero views).
#pragma once

#include <cmath>
#include <string>

#include "Halide.h"
#include "generators/estimates.h"

namespace hmha_gen {

using namespace Halide;

struct ScoreVars {
    Var j{"j"}, i{"i"}, h{"h"}, n{"n"}, d{"d"};
};

struct AttentionScore {
    Func kt{"kt"};        // keys transposed per head: kt(j, d, h, n), so scores vectorize over keys
    Func dot{"dot"};      // sum_d q * k (unscaled)
    Func score{"score"};  // scaled, masked; -inf where hidden
    RDom rd;              // over head_dim, the reduction of dot
};

// Hidden keys score -inf, but Halide compiles float math with LLVM's no-NaNs and
// no-infinities flags, under which LLVM may fold float operations on an
// infinity it can see: on AArch64 `m == -inf` became false, and a max of
// the -inf initial state with a block's max was folded too, so rows or key
// blocks whose keys were all hidden came out NaN (the test "reference: key
// blocks and rows whose keys are all hidden" covers both). Two defences:
// -inf is recognised by its bits (an integer comparison no float flag can
// fold), and on targets other than x86 the online-softmax bookkeeping is
// strict_float. Not on x86: there every test passes without it, and any
// strict_float in a pipeline switches the whole module to per-instruction
// float flags, which made sdpa 25% slower (hmha_tune, 1,2048,2048,1024,16).
inline Expr is_minus_inf(const Expr &x) {
    return reinterpret(UInt(32), x) == Expr(uint32_t(0xff800000u));
}

// e, compiled strictly where strict (strict_inf_math).
inline Expr inf_safe(const Expr &e, bool strict) {
    return strict ? strict_float(e) : e;
}

inline bool strict_inf_math(const Target &t) {
    return t.arch != Target::X86;
}

// The max to subtract before exp: 0 when every score is -inf (nothing to scale).
inline Expr max_or_zero(const Expr &m, bool strict) {
    return inf_safe(select(is_minus_inf(m), 0.0f, m), strict);
}

// Defines score(j, i, h, n) for keys j in [0, S'), queries i in [0, L).
// `tag` names the Funcs apart where one pipeline computes scores more than
// once (sdpa's gpu_two_pass).
inline AttentionScore define_masked_score(const ScoreVars &v, const Func &q, const Func &k, Expr head_dim,
                                          const Func &attn_mask, const Func &attn_mask_bool, const Func &key_padding,
                                          Expr masked_keys, Expr causal, Expr scale, Expr has_masks,
                                          const std::string &tag = "") {
    AttentionScore s;
    if (!tag.empty()) s = {Func("kt_" + tag), Func("dot_" + tag), Func("score_" + tag), RDom()};
    s.kt(v.j, v.d, v.h, v.n) = k(v.d, v.h, v.j, v.n);
    s.rd = RDom(0, head_dim, tag.empty() ? "rd" : "rd_" + tag);
    s.dot(v.j, v.i, v.h, v.n) = 0.0f;
    s.dot(v.j, v.i, v.h, v.n) += q(s.rd, v.h, v.i, v.n) * s.kt(v.j, s.rd, v.h, v.n);

    // Mask indices are clamped so that keys past S (bias_kv / zero_attn) read
    // a valid element; the select then ignores it.
    Expr jm = clamp(v.j, 0, max(masked_keys - 1, 0));
    // has_masks = false lets a schedule specialize the mask loads away.
    Expr maskable = v.j < masked_keys;
    Expr hidden = maskable && ((has_masks && attn_mask_bool(jm, v.i, v.h, v.n) != 0) || (causal && v.j > v.i));
    Expr added = select(maskable && has_masks, attn_mask(jm, v.i, v.h, v.n) + key_padding(jm, v.n), 0.0f);
    Expr inf = Expr(std::numeric_limits<float>::infinity());
    s.score(v.j, v.i, v.h, v.n) = select(hidden, -inf, s.dot(v.j, v.i, v.h, v.n) * scale + added);
    return s;
}

// Autoscheduler estimates shared by the generators that compute scores: the
// inputs of define_masked_score at shape `e` (generators/estimates.h).
template <typename G>
void set_score_input_estimates(G &g, const ShapeEstimate &e) {
    g.q.set_estimates(e.heads(e.l));
    g.k.set_estimates(e.heads(e.s));
    g.attn_mask.set_estimates(e.weights());
    g.attn_mask_bool.set_estimates(e.weights());
    g.key_padding.set_estimates(ShapeEstimate::extents({e.s, e.n}));
    g.masked_keys.set_estimate(e.s);
    g.causal.set_estimate(false);
    g.has_masks.set_estimate(false);
    g.scale.set_estimate(1.0f / std::sqrt((float)e.d()));
}

}  // namespace hmha_gen
