// The need_weights=true path: per-head attention weights
//   w(j, i, h, n) = softmax_j(score(j, i, h, n))      (PyTorch's (N, H, L, S'))
// with the masks of attention_scores.h; fully hidden rows are 0, not NaN.
//
// Three generators share the definition:
//   masked_softmax       the weights alone (attend then multiplies them by V);
//   softmax_attend       (CPU) the weights and out(d, h, i, n) = sum_j w * v in
//                        one pass per query block, while that block's
//                        exponentials are still in cache;
//   softmax_attend_mean  (CPU) the same with the weights averaged over heads
//                        (average_attn_weights, PyTorch's default): a query
//                        block's heads run one after the other and add into
//                        the block's mean, so per-head weights never reach
//                        memory.
//   sdpa_rows            (CPU) out alone (need_weights=false) for short key
//                        sequences: a query block's whole rows of scores at
//                        once, with none of the online softmax's per-block
//                        rescaling (generators/sdpa.cpp); the same inputs and
//                        output as sdpa, which the runtime calls instead when
//                        the keys are few (runtime/src/sdpa_classes.h).
#include "Halide.h"
#include "generators/attention_scores.h"
#include "schedules/cpu/attend.h"
#include "schedules/cpu/defaults.h"
#include "schedules/cpu/masked_softmax.h"
#include "schedules/gpu/masked_softmax.h"

namespace hmha_gen {

using namespace Halide;

// The row softmax of the masked scores: e = exp(score - row max) and its row
// sum den; w = e / den where den > 0, else 0.
struct SoftmaxDefs {
    ScoreVars v;
    AttentionScore sc;
    RDom rj;
    Func row_max{"row_max"}, row_sum{"row_sum"}, e{"e"};
    Expr den;

    // clamp_queries: q and the masks are read through a clamp on the query
    // axis too, so that a schedule may compute whole query blocks past L.
    template <typename G>
    void define(G &g, const Target &target, bool clamp_queries) {
        Expr keys = g.k.dim(2).extent();
        Expr inf = Expr(std::numeric_limits<float>::infinity());
        // Keys are read through a clamp so that schedules may round key vectors up.
        Func kc("kc");
        kc(v.d, v.h, v.j, v.n) = g.k(v.d, v.h, clamp(v.j, 0, keys - 1), v.n);
        Func q = g.q, am = g.attn_mask, amb = g.attn_mask_bool;
        if (clamp_queries) {
            auto row = [&](const auto &b, int dim) { return clamp(v.i, b.dim(dim).min(), b.dim(dim).max()); };
            q = Func("qc");
            q(v.d, v.h, v.i, v.n) = g.q(v.d, v.h, row(g.q, 2), v.n);
            am = Func("attn_mask_c");
            am(v.j, v.i, v.h, v.n) = g.attn_mask(v.j, row(g.attn_mask, 1), v.h, v.n);
            amb = Func("attn_mask_bool_c");
            amb(v.j, v.i, v.h, v.n) = g.attn_mask_bool(v.j, row(g.attn_mask_bool, 1), v.h, v.n);
        }
        sc = define_masked_score(v, q, kc, g.q.dim(0).extent(), am, amb, g.key_padding, g.masked_keys, g.causal,
                                 g.scale, g.has_masks);
        rj = RDom(0, keys, "rj");
        row_max(v.i, v.h, v.n) = -inf;
        row_max(v.i, v.h, v.n) = max(row_max(v.i, v.h, v.n), sc.score(rj, v.i, v.h, v.n));
        Expr m_safe = max_or_zero(row_max(v.i, v.h, v.n), strict_inf_math(target));
        e(v.j, v.i, v.h, v.n) = exp(sc.score(v.j, v.i, v.h, v.n) - m_safe);
        row_sum(v.i, v.h, v.n) = 0.0f;
        row_sum(v.i, v.h, v.n) += e(rj, v.i, v.h, v.n);
        den = row_sum(v.i, v.h, v.n);
    }

    // A division per element (a reciprocal per row was within noise on x86;
    // it once gave NaN on AArch64, from the -inf fold that max_or_zero avoids).
    Expr weight() const {
        return select(den > 0.0f, e(v.j, v.i, v.h, v.n) / den, 0.0f);
    }

    schedules::cpu::MaskedSoftmaxFuncs cpu_funcs(Func weights) const {
        return {weights, row_max, row_sum, e, sc};
    }

    // att(d, i, h, n) = sum_j w * v: the unnormalised exponentials times V
    // (acc), divided once per output.
    void define_attend(Func acc, Func att, Func v_in) const {
        acc(v.d, v.i, v.h, v.n) = 0.0f;
        acc(v.d, v.i, v.h, v.n) += e(rj, v.i, v.h, v.n) * v_in(v.d, v.h, rj, v.n);
        att(v.d, v.i, v.h, v.n) = select(den > 0.0f, acc(v.d, v.i, v.h, v.n) / den, 0.0f);
    }
};

class MaskedSoftmax : public Generator<MaskedSoftmax> {
public:
    GeneratorParam<int> query_block{"query_block", 32, 1, 4096};
    GeneratorParam<int> vector_width{"vector_width", 0, 0, 64};  // 0 = natural for the target
    GeneratorParam<int> gpu_threads{"gpu_threads", 128, 1, 1024};
    GeneratorParam<int> gpu_key_tile{"gpu_key_tile", 0, 0, 1024};  // schedules/gpu/masked_softmax.h
    GeneratorParam<int> gpu_query_tile{"gpu_query_tile", 16, 1, 1024};
    GeneratorParam<int> gpu_tile_j{"gpu_tile_j", 4, 1, 16};
    GeneratorParam<int> gpu_tile_i{"gpu_tile_i", 2, 1, 16};
    GeneratorParam<bool> gpu_split_rows{"gpu_split_rows", false};
    GeneratorParam<bool> gpu_fused_rows{"gpu_fused_rows", false};
    GeneratorParam<int> score_tile_rows{"score_tile_rows", 4, 1, 16};  // CPU: queries per Q.K^T register tile
    GeneratorParam<std::string> estimate{"estimate", kDefaultEstimate};  // autoschedulers: generators/estimates.h

    Input<Buffer<float, 4>> q{"q"};                              // (D, H, L, N)
    Input<Buffer<float, 4>> k{"k"};                              // (D, H, S', N)
    Input<Buffer<float, 4>> attn_mask{"attn_mask"};              // (S, L, H, N)
    Input<Buffer<uint8_t, 4>> attn_mask_bool{"attn_mask_bool"};  // (S, L, H, N)
    Input<Buffer<float, 2>> key_padding{"key_padding"};          // (S, N)
    Input<int> masked_keys{"masked_keys"};
    Input<bool> causal{"causal"};
    Input<bool> has_masks{"has_masks"};
    Input<float> scale{"scale"};
    Output<Buffer<float, 4>> weights{"weights"};  // (S', L, H, N)

    void generate() {
        const bool gpu_tiled = get_target().has_gpu_feature() && gpu_key_tile > 0 && !using_autoscheduler();
        if (gpu_tiled && ((int)gpu_key_tile % (int)gpu_tile_j != 0 || (int)gpu_query_tile % (int)gpu_tile_i != 0)) {
            throw std::invalid_argument(
                "masked_softmax: gpu_tile_j must divide gpu_key_tile and gpu_tile_i gpu_query_tile");
        }
        s_.define(*this, get_target(), gpu_tiled);
        weights(s_.v.j, s_.v.i, s_.v.h, s_.v.n) = s_.weight();

        const ShapeEstimate e = parse_estimate(estimate);
        set_score_input_estimates(*this, e);
        weights.set_estimates(e.weights());

        if (using_autoscheduler()) {
            return;
        }
        if (get_target().has_gpu_feature()) {
            schedules::gpu::schedule_masked_softmax(
                {weights, s_.row_max, s_.row_sum, s_.e, s_.sc, s_.rj}, s_.v,
                {gpu_threads, gpu_key_tile, gpu_query_tile, gpu_tile_j, gpu_tile_i, gpu_split_rows, gpu_fused_rows});
            return;
        }
        schedules::cpu::schedule_masked_softmax(
            s_.cpu_funcs(weights), s_.v, s_.rj, has_masks,
            {query_block, schedules::cpu::or_default(vector_width, schedules::cpu::natural_vector_width(get_target())), 0,
             schedules::cpu::fitting_score_tile_rows(score_tile_rows, get_target())});
    }

private:
    SoftmaxDefs s_;
};

// What softmax_attend and softmax_attend_mean share: params, inputs, the
// softmax and its product with V (their outputs differ).
template <typename T>
class SoftmaxAttendBase : public Generator<T> {
public:
    template <typename X>
    using Input = GeneratorInput<X>;  // Generator<T>'s alias is a dependent name here

    GeneratorParam<int> query_block{"query_block", 32, 1, 4096};
    GeneratorParam<int> vector_width{"vector_width", 0, 0, 64};  // 0 = natural for the target
    GeneratorParam<int> score_tile_rows{"score_tile_rows", 4, 1, 16};  // schedules/cpu/masked_softmax.h
    GeneratorParam<bool> copy_values{"copy_values", false};            // schedules/cpu/masked_softmax.h
    GeneratorParam<int> key_chunk{"key_chunk", 0, 0, 65536};           // 0 = whole rows

    Input<Buffer<float, 4>> q{"q"};                              // (D, H, L, N)
    Input<Buffer<float, 4>> k{"k"};                              // (D, H, S', N)
    Input<Buffer<float, 4>> v{"v"};                              // (D, H, S', N)
    Input<Buffer<float, 4>> attn_mask{"attn_mask"};              // (S, L, H, N)
    Input<Buffer<uint8_t, 4>> attn_mask_bool{"attn_mask_bool"};  // (S, L, H, N)
    Input<Buffer<float, 2>> key_padding{"key_padding"};          // (S, N)
    Input<int> masked_keys{"masked_keys"};
    Input<bool> causal{"causal"};
    Input<bool> has_masks{"has_masks"};
    Input<float> scale{"scale"};

protected:
    // The softmax (q and the masks read through a clamp on the query axis)
    // and att = e.V / row sum; CPU only.
    void define_softmax_attend(const char *name) {
        const Target t = this->get_target();
        if (t.has_gpu_feature() || this->using_autoscheduler()) {
            throw std::invalid_argument(std::string(name) + ": CPU schedule only (GPUs run masked_softmax, attend "
                                        "and head_mean)");
        }
        // The Q.K^T tiles are 2 vectors of keys wide, so a chunk is whole tiles.
        if (key_chunk % (2 * vw()) != 0) {
            throw std::invalid_argument(std::string(name) + ": key_chunk: expected 0 or a multiple of " +
                                        std::to_string(2 * vw()) + " (2 vectors), got " +
                                        std::to_string((int)key_chunk));
        }
        s_.define(*this, t, true);
        s_.define_attend(acc, att, v);
        set_score_input_estimates(*this, e_);
        v.set_estimates(e_.heads(e_.s));
    }

    int vw() const {
        const Target t = this->get_target();
        return schedules::cpu::or_default(vector_width, schedules::cpu::natural_vector_width(t));
    }

    int score_rows() const {
        return schedules::cpu::fitting_score_tile_rows(score_tile_rows, this->get_target());
    }

    SoftmaxDefs s_;
    // No autoscheduler takes these generators (above), so no `estimate` param:
    // their metadata's estimates stay at the default shape.
    const ShapeEstimate e_ = parse_estimate(kDefaultEstimate);
    Func acc{"acc"}, att{"att"};
};

class SoftmaxAttend : public SoftmaxAttendBase<SoftmaxAttend> {
public:
    Output<Buffer<float, 4>> weights{"weights"};  // (S', L, H, N)
    Output<Buffer<float, 4>> out{"out"};          // (D, H, L, N)

    void generate() {
        define_softmax_attend("softmax_attend");
        const ScoreVars &x = s_.v;
        weights(x.j, x.i, x.h, x.n) = s_.weight();
        out(x.d, x.h, x.i, x.n) = att(x.d, x.i, x.h, x.n);
        weights.set_estimates(e_.weights());
        out.set_estimates(e_.heads(e_.l));

        schedules::cpu::schedule_softmax_attend(s_.cpu_funcs(weights), out, att, acc, v, s_.v, s_.rj, has_masks,
                                                {query_block, vw(), key_chunk, score_rows(), copy_values},
                                                schedules::cpu::register_tile_rows(get_target()));
    }
};

class SoftmaxAttendMean : public SoftmaxAttendBase<SoftmaxAttendMean> {
public:
    Output<Buffer<float, 3>> mean{"mean"};  // (S', L, N): the weights averaged over heads
    Output<Buffer<float, 4>> out{"out"};    // (D, H, L, N)

    void generate() {
        define_softmax_attend("softmax_attend_mean");
        const ScoreVars &x = s_.v;
        // Both outputs are written head by head (rh), so that a schedule can
        // run a query block's heads one after the other: the first head
        // overwrites what the mean's buffer held, the others add. likely()
        // peels the first head off, so the buffer is not read before it is
        // written: a fresh output's first read maps the zero page, and the
        // write after it then costs a TLB shootdown across threads (measured:
        // 16% of the forward at (4, 512, 512, 512, 8) in kernel time).
        // head_mean sums then scales; here each head's weight is scaled (a
        // rounding apart).
        Expr heads = q.dim(1).extent();
        RDom rh(0, heads, "rh");
        Func w("w");
        w(x.j, x.i, x.h, x.n) = s_.weight() * (1.0f / cast<float>(heads));
        mean(x.j, x.i, x.n) = undef<float>();
        mean(x.j, x.i, x.n) =
            select(likely(rh.x > 0), mean(x.j, x.i, x.n) + w(x.j, x.i, rh, x.n), w(x.j, x.i, rh, x.n));
        out(x.d, x.h, x.i, x.n) = undef<float>();
        // compute_with fuses loops of one kind only: rh is a serial (impure)
        // loop of the mean, so out's rh must be too. The never-taken read of
        // the previous head makes it so (and simplifies away once rh >= 0).
        Expr never = rh.x < 0;
        out(x.d, rh, x.i, x.n) = select(never, out(x.d, max(rh.x - 1, 0), x.i, x.n), att(x.d, x.i, rh, x.n));

        mean.set_estimates(e_.mean());
        out.set_estimates(e_.heads(e_.l));

        schedules::cpu::schedule_softmax_attend_mean(s_.cpu_funcs(mean), out, att, acc, v, s_.v, s_.rj, rh, has_masks,
                                                     {query_block, vw(), key_chunk, score_rows(), copy_values},
                                                     schedules::cpu::register_tile_rows(get_target()));
    }
};

class SdpaRows : public SoftmaxAttendBase<SdpaRows> {
public:
    Output<Buffer<float, 4>> out{"out"};  // (D, H, L, N)

    void generate() {
        define_softmax_attend("sdpa_rows");
        const ScoreVars &x = s_.v;
        out(x.d, x.h, x.i, x.n) = att(x.d, x.i, x.h, x.n);
        out.set_estimates(e_.heads(e_.l));
        schedules::cpu::schedule_sdpa_rows(s_.cpu_funcs(out), out, att, acc, v, s_.v, s_.rj, k.dim(2).extent(),
                                           has_masks, {query_block, vw(), key_chunk, score_rows(), copy_values},
                                           schedules::cpu::register_tile_rows(get_target()));
    }
};

}  // namespace hmha_gen

HALIDE_REGISTER_GENERATOR(hmha_gen::MaskedSoftmax, masked_softmax)
HALIDE_REGISTER_GENERATOR(hmha_gen::SoftmaxAttend, softmax_attend)
HALIDE_REGISTER_GENERATOR(hmha_gen::SoftmaxAttendMean, softmax_attend_mean)
HALIDE_REGISTER_GENERATOR(hmha_gen::SdpaRows, sdpa_rows)
