// Fused scaled-dot-product attention (need_weights=false): flash-style online
// softmax over blocks of keys. No L x S buffer exists in any schedule: each key
// block contributes its max, exp-sum and exp-weighted values, and a running
// (max, sum, accumulator) state is rescaled block by block.
//
//   out(d, h, i, n) = sum_j softmax_j(score(j, i, h, n)) * v(d, h, j, n)
//
// Rows whose keys are all hidden produce 0 (SPEC.md §2), never NaN.
// On the CPU, calls with up to 1024 keys run sdpa_rows instead
// (generators/masked_softmax.cpp: whole rows of keys, no per-block rescaling;
// runtime/src/sdpa_classes.h).
#include "Halide.h"
#include "generators/attention_scores.h"
#include "schedules/cpu/defaults.h"
#include "schedules/cpu/sdpa.h"
#include "schedules/gpu/sdpa.h"

namespace hmha_gen {

using namespace Halide;

class Sdpa : public Generator<Sdpa> {
public:
    GeneratorParam<int> key_block{"key_block", 256, 1, 4096};
    GeneratorParam<int> query_block{"query_block", 32, 1, 4096};
    GeneratorParam<int> vector_width{"vector_width", 0, 0, 64};  // 0 = natural for the target
    GeneratorParam<int> gpu_key_block{"gpu_key_block", 32, 1, 1024};  // shared memory: runtime/src/mha.cpp kGpuFusedMaxHeadDim
    GeneratorParam<int> gpu_query_block{"gpu_query_block", 8, 1, 64};
    GeneratorParam<int> gpu_threads_d{"gpu_threads_d", 32, 1, 1024};
    GeneratorParam<bool> gpu_keys_transposed_shared{"gpu_keys_transposed_shared", true};  // schedules/gpu/sdpa.h
    GeneratorParam<bool> gpu_thread_per_query{"gpu_thread_per_query", false};
    GeneratorParam<int> gpu_unroll{"gpu_unroll", 4, 1, 16};
    GeneratorParam<bool> gpu_thread_state{"gpu_thread_state", false};
    GeneratorParam<int> gpu_max_head_dim{"gpu_max_head_dim", 128, 1, 1024};  // runtime/src/mha.cpp kGpuFusedMaxHeadDim
    GeneratorParam<int> gpu_dot_unroll{"gpu_dot_unroll", 1, 1, 16};
    GeneratorParam<bool> gpu_pv_registers{"gpu_pv_registers", false};
    GeneratorParam<int> gpu_tile_j{"gpu_tile_j", 1, 1, 16};  // register tiles: schedules/gpu/sdpa.h
    GeneratorParam<int> gpu_tile_i{"gpu_tile_i", 1, 1, 16};
    GeneratorParam<int> gpu_tile_d{"gpu_tile_d", 1, 1, 16};
    GeneratorParam<bool> gpu_split_block_reductions{"gpu_split_block_reductions", false};
    GeneratorParam<bool> gpu_thread_block_reductions{"gpu_thread_block_reductions", false};
    GeneratorParam<bool> gpu_stage_values{"gpu_stage_values", false};  // tiled only: schedules/gpu/sdpa.h
    // GPU: the row max in a pass of its own, then no online softmax (define_two_pass).
    GeneratorParam<bool> gpu_two_pass{"gpu_two_pass", false};
    // A guard-free kernel for this head_dim (0: none): schedules/gpu/sdpa.h.
    GeneratorParam<int> gpu_head_dim{"gpu_head_dim", 64, 0, 1024};
    // CPU only: k arrives transposed, k(j, d, h, n), with at least the keys
    // rounded up to whole key blocks (the padding keys are read and hidden;
    // the key count is v's). The kernel then keeps no transposed copy of its
    // own: the runtime's per-head path (Scratch::PerHead) writes K^T directly.
    GeneratorParam<bool> keys_transposed{"keys_transposed", false};
    // Queries per Q.K^T and per P.V register tile; 0: register_tile_rows
    // (schedules/cpu/defaults.h, sdpa_tiles).
    GeneratorParam<int> score_tile_rows{"score_tile_rows", 0, 0, 16};
    GeneratorParam<int> pv_tile_rows{"pv_tile_rows", 0, 0, 16};
    GeneratorParam<int> reduction_vectors{"reduction_vectors", 1, 0, 16};  // schedules/cpu/sdpa.h lane_reduction
    GeneratorParam<bool> copy_values{"copy_values", false};  // CPU only: schedules/cpu/sdpa.h
    GeneratorParam<std::string> estimate{"estimate", kDefaultEstimate};  // autoschedulers: generators/estimates.h

    Input<Buffer<float, 4>> q{"q"};                            // (D, H, L, N)
    Input<Buffer<float, 4>> k{"k"};                            // (D, H, S', N), or (S'', D, H, N) transposed
    Input<Buffer<float, 4>> v{"v"};                            // (D, H, S', N)
    Input<Buffer<float, 4>> attn_mask{"attn_mask"};            // (S, L, H, N)
    Input<Buffer<uint8_t, 4>> attn_mask_bool{"attn_mask_bool"};  // (S, L, H, N)
    Input<Buffer<float, 2>> key_padding{"key_padding"};        // (S, N)
    Input<int> masked_keys{"masked_keys"};                     // S
    Input<bool> causal{"causal"};
    Input<bool> has_masks{"has_masks"};
    Input<float> scale{"scale"};
    Output<Buffer<float, 4>> out{"out"};  // (D, H, L, N)

    void generate() {
        Expr head_dim = q.dim(0).extent();
        Expr keys = v.dim(2).extent();
        Expr inf = Expr(std::numeric_limits<float>::infinity());
        const bool gpu = get_target().has_gpu_feature() && !using_autoscheduler();
        int kb_size = gpu ? (int)gpu_key_block : (int)key_block;

        // Keys past S' (padding of the last block) read the last key, or the
        // transposed input's padding, and are hidden.
        if (keys_transposed && (gpu || using_autoscheduler())) {
            throw std::invalid_argument("sdpa: keys_transposed is for the CPU schedule only");
        }
        Func kc("kc"), vc("vc");
        Expr jc = clamp(v_.j, 0, keys - 1);
        if (keys_transposed) {
            kc(v_.d, v_.h, v_.j, v_.n) = k(v_.j, v_.d, v_.h, v_.n);
        } else {
            kc(v_.d, v_.h, v_.j, v_.n) = k(v_.d, v_.h, jc, v_.n);
        }
        vc(v_.d, v_.h, v_.j, v_.n) = v(v_.d, v_.h, jc, v_.n);
        // GPU: queries past L (the last query tile of a register-tiled dot
        // product) read the last query; their scores are never used.
        Func qc = q;
        if (gpu) {
            qc = Func("qc");
            qc(v_.d, v_.h, v_.i, v_.n) = q(v_.d, v_.h, clamp(v_.i, 0, q.dim(2).extent() - 1), v_.n);
        }
        if (gpu && gpu_two_pass) {
            define_two_pass(qc, kc, vc, head_dim, keys);
            return;
        }
        sc = define_masked_score(v_, qc, kc, head_dim, attn_mask, attn_mask_bool, key_padding,
                                 masked_keys, causal, scale, has_masks);
        Func score("score_padded");
        score(v_.j, v_.i, v_.h, v_.n) = select(v_.j < keys, sc.score(v_.j, v_.i, v_.h, v_.n), -inf);

        // Per key block kb: its max, exp-sum and exp-weighted values, all relative
        // to the block's own max (0 when the whole block is hidden).
        RDom rj(0, kb_size, "rj");
        Expr j_of = kb * kb_size;
        block_max(kb, v_.i, v_.h, v_.n) = -inf;
        block_max(kb, v_.i, v_.h, v_.n) = max(block_max(kb, v_.i, v_.h, v_.n), score(j_of + rj, v_.i, v_.h, v_.n));
        Expr bm = block_max(kb, v_.i, v_.h, v_.n);
        const bool strict = strict_inf_math(get_target());
        Expr bm_safe = max_or_zero(bm, strict);
        p(jj, kb, v_.i, v_.h, v_.n) = exp(score(j_of + jj, v_.i, v_.h, v_.n) - bm_safe);
        block_sum(kb, v_.i, v_.h, v_.n) = 0.0f;
        block_sum(kb, v_.i, v_.h, v_.n) += p(rj, kb, v_.i, v_.h, v_.n);
        block_pv(v_.d, kb, v_.i, v_.h, v_.n) = 0.0f;
        block_pv(v_.d, kb, v_.i, v_.h, v_.n) += p(rj, kb, v_.i, v_.h, v_.n) * vc(v_.d, v_.h, j_of + rj, v_.n);

        // The online-softmax scan over key blocks. Causal: blocks wholly to the
        // right of query i, and holding no appended (never-masked) key, are skipped.
        Expr blocks = (keys + kb_size - 1) / kb_size;
        RDom rb(0, blocks, "rb");
        Expr block_visible = !causal || rb * kb_size <= v_.i || (rb + 1) * kb_size > masked_keys;
        rb.where(block_visible);
        state(v_.d, v_.i, v_.h, v_.n) = Tuple(-inf, 0.0f, 0.0f);
        Expr m = state(v_.d, v_.i, v_.h, v_.n)[0];
        Expr l = state(v_.d, v_.i, v_.h, v_.n)[1];
        Expr acc = state(v_.d, v_.i, v_.h, v_.n)[2];
        Expr bmr = block_max(rb, v_.i, v_.h, v_.n);
        Expr m_new = max(m, bmr);
        // One of the two rescale factors is 1 (whichever max wins), so one exp
        // per element and block suffices. Both -inf: nothing seen yet, nothing added.
        // m and bmr may be -inf: see inf_safe (attention_scores.h).
        Expr none = is_minus_inf(m_new);
        Expr shrink = select(none, 0.0f, exp(-abs(m - bmr)));
        Expr alpha = select(none, 0.0f, m >= bmr, 1.0f, shrink);
        Expr beta = select(none, 0.0f, m >= bmr, shrink, 1.0f);
        state(v_.d, v_.i, v_.h, v_.n) =
            Tuple(inf_safe(m_new, strict), inf_safe(l * alpha + block_sum(rb, v_.i, v_.h, v_.n) * beta, strict),
                  inf_safe(acc * alpha + block_pv(v_.d, rb, v_.i, v_.h, v_.n) * beta, strict));

        Expr lf = state(v_.d, v_.i, v_.h, v_.n)[1];
        out(v_.d, v_.h, v_.i, v_.n) = select(lf > 0.0f, state(v_.d, v_.i, v_.h, v_.n)[2] / lf, 0.0f);

        const ShapeEstimate e = parse_estimate(estimate);
        set_score_input_estimates(*this, e);
        if (keys_transposed) k.set_estimates(e.keys_transposed());
        v.set_estimates(e.heads(e.s));
        out.set_estimates(e.heads(e.l));

        if (using_autoscheduler()) {
            return;
        }
        if (gpu) {
            if ((int)gpu_key_block % (int)gpu_tile_j != 0 || (int)gpu_query_block % (int)gpu_tile_i != 0) {
                throw std::invalid_argument(
                    "sdpa: gpu_tile_j must divide gpu_key_block and gpu_tile_i gpu_query_block");
            }
            schedules::gpu::SdpaFuncs g{out, state, block_max, block_sum, block_pv, p, score, sc, kc, vc};
            schedules::gpu::schedule_sdpa(g, v_, kb, jj, rj, rb,
                                          {gpu_key_block, gpu_query_block, gpu_threads_d, gpu_keys_transposed_shared,
                                           gpu_thread_per_query, gpu_unroll, gpu_thread_state,
                                           gpu_max_head_dim, gpu_dot_unroll, gpu_pv_registers, gpu_tile_j,
                                           gpu_tile_i, gpu_tile_d, gpu_split_block_reductions,
                                           gpu_thread_block_reductions, gpu_stage_values, gpu_head_dim},
                                          head_dim, has_masks);
            if (gpu_thread_per_query && gpu_thread_state) {
                add_requirement(head_dim <= (int)gpu_max_head_dim, "sdpa: head_dim", head_dim,
                                "exceeds gpu_max_head_dim", (int)gpu_max_head_dim);
            }
            return;
        }
        schedules::cpu::SdpaFuncs f{out, state, block_max, block_sum, block_pv, p, score, sc, kc, vc};
        const Target t = get_target();
        const schedules::cpu::SdpaTiles tiles =
            schedules::cpu::sdpa_tiles(score_tile_rows, pv_tile_rows, query_block, t);
        const int vw = schedules::cpu::or_default(vector_width, schedules::cpu::natural_vector_width(t));
        schedules::cpu::SdpaParams prm{key_block, tiles.query_block, vw, tiles.pv_rows, keys_transposed,
                                       tiles.score_rows, reduction_vectors, copy_values};
        schedules::cpu::schedule_sdpa(f, v_, kb, jj, rj, rb, has_masks, prm, blocks * kb_size);
    }

private:
    // gpu_two_pass (GPU only): each query's row max of the scores in a pass
    // over the keys of its own, then exp(score - max) and its products with V
    // summed over the keys in a second. Two plain reductions instead of the
    // online softmax's (max, sum, accumulator) state, rescaled at every key
    // block and replicated per head dim: one thread a query can keep its
    // query, its max and its head_dim + 1 sums (the last is the row sum, the
    // weight of a "value" of 1) in registers (schedule_sdpa_two_pass). The
    // scores are computed twice. Two copies of both passes: `fixed` at
    // head_dim = gpu_head_dim (every loop over head dims unrolled) where the
    // strides allow vector loads, `any` at every other head_dim (up to
    // gpu_max_head_dim); out picks one, and a specialization on the same
    // condition leaves the other out of its branch (in the other branch its
    // loops over keys have no iterations).
    void define_two_pass(Func qc, Func kc, Func vc, Expr head_dim, Expr keys) {
        const int hd_fixed = gpu_head_dim;
        if (hd_fixed % 4 != 0) throw std::invalid_argument("sdpa: gpu_two_pass needs gpu_head_dim a multiple of 4");
        Expr aligned = Internal::const_true();
        for (const auto *b : {&q, &k, &v}) {
            for (int dim = 1; dim < 4; dim++) aligned = aligned && b->dim(dim).stride() % 4 == 0;
        }
        Expr use_fixed = hd_fixed > 0 ? (head_dim == hd_fixed && aligned) : Internal::const_false();
        const bool strict = strict_inf_math(get_target());
        Expr inf = Expr(std::numeric_limits<float>::infinity());
        std::vector<schedules::gpu::TwoPassFuncs> chains;
        std::vector<int> copies{0};  // the fixed copy first, where there is one
        if (hd_fixed > 0) copies.insert(copies.begin(), hd_fixed);
        for (int fixed : copies) {
            schedules::gpu::TwoPassFuncs t;
            t.fixed_head_dim = fixed;
            const std::string tag = fixed ? "fixed" : "any";
            Expr hd = fixed ? Expr(fixed) : head_dim;
            Expr live = fixed ? use_fixed : !use_fixed;
            // q, k and v through Funcs of their own, which a schedule may stage
            // in registers; clamped, so that the fixed copy reads in bounds
            // where it does not run.
            t.q(v_.d, v_.h, v_.i, v_.n) = qc(min(v_.d, head_dim - 1), v_.h, v_.i, v_.n);
            t.k_max(v_.d, v_.h, v_.j, v_.n) = kc(min(v_.d, head_dim - 1), v_.h, v_.j, v_.n);
            t.k_sum(v_.d, v_.h, v_.j, v_.n) = kc(min(v_.d, head_dim - 1), v_.h, v_.j, v_.n);
            t.v(v_.d, v_.h, v_.j, v_.n) = vc(min(v_.d, head_dim - 1), v_.h, v_.j, v_.n);
            t.sc_max = define_masked_score(v_, t.q, t.k_max, hd, attn_mask, attn_mask_bool, key_padding, masked_keys,
                                           causal, scale, has_masks, tag + "_max");
            t.sc_sum = define_masked_score(v_, t.q, t.k_sum, hd, attn_mask, attn_mask_bool, key_padding, masked_keys,
                                           causal, scale, has_masks, tag + "_sum");
            // The keys of both passes. Causal, with no appended keys: the keys
            // after query i are hidden, so its loops end at key i.
            t.rk = RDom(0, select(live, keys, 0), "rk_" + tag);
            t.rk.where(t.rk.x <= select(causal && masked_keys >= keys, v_.i, keys - 1));
            t.row_max(v_.i, v_.h, v_.n) = -inf;
            t.row_max(v_.i, v_.h, v_.n) = max(t.row_max(v_.i, v_.h, v_.n), t.sc_max.score(t.rk, v_.i, v_.h, v_.n));
            Expr m = max_or_zero(t.row_max(v_.i, v_.h, v_.n), strict);
            t.e(v_.j, v_.i, v_.h, v_.n) = exp(t.sc_sum.score(v_.j, v_.i, v_.h, v_.n) - m);
            // acc(d) for d < hd: sum_j e_j v_j(d); acc(hd): sum_j e_j.
            t.acc(v_.d, v_.i, v_.h, v_.n) = 0.0f;
            t.acc(v_.d, v_.i, v_.h, v_.n) +=
                t.e(t.rk, v_.i, v_.h, v_.n) * select(v_.d < hd, t.v(min(v_.d, hd - 1), v_.h, t.rk, v_.n), 1.0f);
            chains.push_back(t);
        }
        auto result = [&](const schedules::gpu::TwoPassFuncs &t, Expr d) {
            Expr hd = t.fixed_head_dim ? Expr(t.fixed_head_dim) : head_dim;
            Func acc = t.acc;
            Expr l = acc(hd, v_.i, v_.h, v_.n);
            return inf_safe(select(l > 0.0f, acc(d, v_.i, v_.h, v_.n) / l, 0.0f), strict);
        };
        if (chains.size() == 1) {
            out(v_.d, v_.h, v_.i, v_.n) = result(chains[0], v_.d);
        } else {
            // The fixed copy is read at d < gpu_head_dim only, which its registers hold.
            out(v_.d, v_.h, v_.i, v_.n) =
                select(use_fixed, result(chains[0], min(v_.d, hd_fixed - 1)), result(chains[1], v_.d));
        }
        if (hd_fixed > 0) {
            // Aligned vector loads of q, k and v in the fixed copy, and its
            // registers indexed from head dim 0 (the runtime's views all
            // start there).
            for (auto *b : {&q, &k, &v}) b->set_host_alignment(16).dim(0).set_min(0);
            // out as wide as q's head dims (the runtime's always is), so that
            // in the fixed branch every loop over head dims has a constant extent.
            out.dim(0).set_min(0).set_extent(q.dim(0).extent());
        }
        add_requirement(head_dim <= (int)gpu_max_head_dim, "sdpa: head_dim", head_dim, "exceeds gpu_max_head_dim",
                        (int)gpu_max_head_dim);
        schedules::gpu::schedule_sdpa_two_pass(out, v_, chains, gpu_query_block, gpu_unroll, gpu_max_head_dim,
                                               use_fixed, causal);
    }

    ScoreVars v_;
    Var kb{"kb"}, jj{"jj"};
    AttentionScore sc;
    Func block_max{"block_max"}, block_sum{"block_sum"}, block_pv{"block_pv"}, p{"p"}, state{"state"};
};

}  // namespace hmha_gen

HALIDE_REGISTER_GENERATOR(hmha_gen::Sdpa, sdpa)
