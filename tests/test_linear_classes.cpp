// The GPU families' linear classes (runtime/src/kernels.cpp, linear_for):
// linear_few_rows for projections of few outputs, linear_vector_x where k is
// a multiple of its unroll and x's rows are aligned, linear elsewhere. The
// suites' small shapes mostly take linear_few_rows; here the threshold is
// moved so that the same forwards run each class, checked against the
// float64 reference. Tagged [semantics]: it runs on every device family (on
// the CPU it checks the CPU's linear, the only one there).
#include <catch2/catch.hpp>

#include <map>
#include <random>
#include <string>
#include <vector>

#include "device.h"
#include "hmha/hmha.h"
#include "reference.h"

namespace hmha::detail {
// runtime/src/kernels.cpp: the few-rows threshold (outputs); returns the previous one.
int64_t set_gpu_few_rows_outputs(int64_t outputs);
}  // namespace hmha::detail

namespace {

// Restores the threshold when a check fails.
struct Threshold {
    int64_t saved;
    explicit Threshold(int64_t outputs) : saved(hmha::detail::set_gpu_few_rows_outputs(outputs)) {}
    ~Threshold() { hmha::detail::set_gpu_few_rows_outputs(saved); }
};

}  // namespace

TEST_CASE("linear classes: every GPU projection class agrees with the reference", "[semantics]") {
    // k = E and kdim: 16 and 24 are multiples of 8 (linear_vector_x where
    // allowed), 12 and 20 are not (linear).
    struct Case {
        int64_t E, H, kdim;
    };
    for (const Case c : {Case{16, 2, 16}, Case{24, 3, 20}, Case{12, 3, 12}}) {
        for (const int64_t threshold : {int64_t(0), int64_t(1) << 40}) {
            INFO("E=" << c.E << " kdim=vdim=" << c.kdim << " few-rows threshold=" << threshold);
            std::mt19937 rng(11);
            const int64_t L = 7, S = 9, N = 3;
            hmha::Options o;
            o.device = test_device();
            o.embed_dim = c.E;
            o.num_heads = c.H;
            o.kdim = o.vdim = c.kdim;
            const auto sd = random_state_dict(o, rng);
            const hmha::Tensor q = random_tensor({L, N, c.E}, rng), k = random_tensor({S, N, c.kdim}, rng),
                               v = random_tensor({S, N, c.kdim}, rng);
            for (const bool need_weights : {false, true}) {
                INFO("need_weights=" << need_weights);
                hmha::ForwardOptions f;
                f.need_weights = need_weights;
                const Threshold t(threshold);
                hmha::MultiheadAttention mha(o, sd);
                const hmha::ForwardResult got = mha.forward(q, k, v, f);
                const RefResult ref = reference_forward(o, sd, q, k, v, f);
                CHECK(compare_to_reference(got.attn_output, ref.out_shape, ref.out) == "");
                if (need_weights) {
                    REQUIRE(got.attn_output_weights.has_value());
                    CHECK(compare_to_reference(*got.attn_output_weights, ref.w_shape, ref.weights) == "");
                }
            }
        }
    }
}
