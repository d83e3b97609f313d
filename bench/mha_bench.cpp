// The full MHA forward at the shapes of bench/README.md, need_weights false and
// true, with OpenBLAS sgemm at the projection shape as the practical limit.
//
//   build/bench/hmha_bench [--benchmark_filter=...] [--benchmark_repetitions=5]
//
// Each benchmark reports GFLOP/s with one formula (flops() below), counting the
// four projections and the two attention matmuls (4*N*L*S*E; halved for causal).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cmath>
#include <random>

#include "hmha/hmha.h"

namespace {

struct Shape {
    int64_t N, L, S, E, H;
};

double flops(const Shape &s, bool causal) {
    double proj = 2.0 * s.N * s.E * s.E * (2.0 * s.L + 2.0 * s.S);
    double attn = 4.0 * s.N * s.L * s.S * s.E;
    return proj + (causal ? attn / 2 : attn);
}

hmha::Tensor random_tensor(std::vector<int64_t> shape, float scale, std::mt19937 &rng) {
    hmha::Tensor t(std::move(shape));
    std::normal_distribution<float> nd(0.0f, scale);
    for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] = nd(rng);
    return t;
}

void BM_mha_forward(benchmark::State &state, Shape s, bool need_weights, bool causal) {
    std::mt19937 rng(42);
    float ws = 1.0f / std::sqrt((float)s.E);
    std::map<std::string, hmha::Tensor> sd{{"in_proj_weight", random_tensor({3 * s.E, s.E}, ws, rng)},
                                           {"in_proj_bias", random_tensor({3 * s.E}, 0.1f, rng)},
                                           {"out_proj.weight", random_tensor({s.E, s.E}, ws, rng)},
                                           {"out_proj.bias", random_tensor({s.E}, 0.1f, rng)}};
    hmha::Options opt;
    opt.embed_dim = s.E;
    opt.num_heads = s.H;
    opt.batch_first = true;
    hmha::MultiheadAttention mha(opt, sd);
    hmha::Tensor x = random_tensor({s.N, s.L, s.E}, 1.0f, rng);
    hmha::Tensor kv = s.S == s.L ? x : random_tensor({s.N, s.S, s.E}, 1.0f, rng);
    hmha::ForwardOptions f;
    f.need_weights = need_weights;
    f.is_causal = causal;
    // Validate before timing: finite output of the right shape.
    auto r = mha.forward(x, kv, kv, f);
    for (int64_t i = 0; i < r.attn_output.numel(); i++) {
        if (!std::isfinite(r.attn_output.f32()[i])) {
            state.SkipWithError("non-finite output");
            return;
        }
    }
    for (auto _ : state) {
        auto out = mha.forward(x, kv, kv, f);
        benchmark::DoNotOptimize(out.attn_output.f32());
    }
    state.counters["GFLOP/s"] =
        benchmark::Counter(flops(s, causal) * 1e-9 * (double)state.iterations(), benchmark::Counter::kIsRate);
}

// The practical limit: OpenBLAS sgemm at one projection's shape (rows x E x E).
void BM_openblas_sgemm(benchmark::State &state, int64_t rows, int64_t E) {
    std::mt19937 rng(1);
    auto a = random_tensor({rows, E}, 1.0f, rng), w = random_tensor({E, E}, 1.0f, rng);
    hmha::Tensor c({rows, E});
    for (auto _ : state) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)E, (int)E, 1.0f, a.f32(), (int)E,
                    w.f32(), (int)E, 0.0f, c.f32(), (int)E);
        benchmark::DoNotOptimize(c.f32());
    }
    state.counters["GFLOP/s"] =
        benchmark::Counter(2.0 * rows * E * E * 1e-9 * (double)state.iterations(), benchmark::Counter::kIsRate);
}

void register_all() {
    const Shape shapes[] = {{4, 512, 512, 512, 8}, {1, 2048, 2048, 512, 8}};
    for (const Shape &s : shapes) {
        for (bool nw : {false, true}) {
            for (bool causal : {false, true}) {
                std::string name = "mha_forward/N" + std::to_string(s.N) + "_L" + std::to_string(s.L) + "_S" +
                                   std::to_string(s.S) + "_E" + std::to_string(s.E) + "_H" + std::to_string(s.H) +
                                   (nw ? "/need_weights" : "/fused") + (causal ? "/causal" : "");
                benchmark::RegisterBenchmark(name.c_str(), BM_mha_forward, s, nw, causal)
                    ->Unit(benchmark::kMillisecond)
                    ->UseRealTime();
            }
        }
        std::string name = "openblas_sgemm/rows" + std::to_string(s.N * s.L) + "_E" + std::to_string(s.E);
        benchmark::RegisterBenchmark(name.c_str(), BM_openblas_sgemm, s.N * s.L, s.E)
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime();
    }
}

}  // namespace

int main(int argc, char **argv) {
    register_all();
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
