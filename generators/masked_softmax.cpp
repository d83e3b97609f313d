// The need_weights=true path, part 1: per-head attention weights
//   w(j, i, h, n) = softmax_j(score(j, i, h, n))      (PyTorch's (N, H, L, S'))
// with the masks of attention_scores.h; fully hidden rows are 0, not NaN.
#include "Halide.h"
#include "generators/attention_scores.h"
#include "schedules/cpu/defaults.h"
#include "schedules/cpu/masked_softmax.h"
#include "schedules/gpu/masked_softmax.h"

namespace hmha_gen {

using namespace Halide;

class MaskedSoftmax : public Generator<MaskedSoftmax> {
public:
    GeneratorParam<int> query_block{"query_block", 32, 1, 4096};
    GeneratorParam<int> vector_width{"vector_width", 0, 0, 64};  // 0 = natural for the target
    GeneratorParam<int> gpu_threads{"gpu_threads", 128, 1, 1024};

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
        Expr keys = k.dim(2).extent();
        Expr inf = Expr(std::numeric_limits<float>::infinity());
        // Keys are read through a clamp so that schedules may round key vectors up.
        Func kc("kc");
        kc(v_.d, v_.h, v_.j, v_.n) = k(v_.d, v_.h, clamp(v_.j, 0, keys - 1), v_.n);
        sc = define_masked_score(v_, q, kc, q.dim(0).extent(), attn_mask, attn_mask_bool, key_padding, masked_keys,
                                 causal, scale, has_masks);
        RDom rj(0, keys, "rj");
        row_max(v_.i, v_.h, v_.n) = -inf;
        row_max(v_.i, v_.h, v_.n) = max(row_max(v_.i, v_.h, v_.n), sc.score(rj, v_.i, v_.h, v_.n));
        Expr m = row_max(v_.i, v_.h, v_.n);
        Expr m_safe = max_or_zero(m, strict_inf_math(get_target()));
        e(v_.j, v_.i, v_.h, v_.n) = exp(sc.score(v_.j, v_.i, v_.h, v_.n) - m_safe);
        row_sum(v_.i, v_.h, v_.n) = 0.0f;
        row_sum(v_.i, v_.h, v_.n) += e(rj, v_.i, v_.h, v_.n);
        // A division per element (a reciprocal per row was within noise on x86;
        // it once gave NaN on AArch64, from the -inf fold that max_or_zero avoids).
        Expr den = row_sum(v_.i, v_.h, v_.n);
        weights(v_.j, v_.i, v_.h, v_.n) = select(den > 0.0f, e(v_.j, v_.i, v_.h, v_.n) / den, 0.0f);

        set_score_input_estimates(*this);
        weights.set_estimates({{0, 512}, {0, 512}, {0, 8}, {0, 4}});

        if (using_autoscheduler()) {
            return;
        }
        if (get_target().has_gpu_feature()) {
            schedules::gpu::schedule_masked_softmax({weights, row_max, row_sum, e, sc}, v_, {gpu_threads});
            return;
        }
        schedules::cpu::MaskedSoftmaxFuncs f{weights, row_max, row_sum, e, sc};
        schedules::cpu::schedule_masked_softmax(
            f, v_, rj, has_masks,
            {query_block, schedules::cpu::or_default(vector_width, schedules::cpu::natural_vector_width(get_target()))});
    }

private:
    ScoreVars v_;
    AttentionScore sc;
    Func row_max{"row_max"}, row_sum{"row_sum"}, e{"e"};
};

}  // namespace hmha_gen

HALIDE_REGISTER_GENERATOR(hmha_gen::MaskedSoftmax, masked_softmax)
