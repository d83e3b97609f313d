// The hand-written baseline of the kind users write: OpenBLAS sgemm for the four
// projections and, per (batch, head), the scores Q K^T and weights @ V, with a
// straightforward row softmax in between (one L x S score matrix per head).
// float32, batch_first, no masks other than causal.
#pragma once

#include <vector>

#include "../bench_common.h"

namespace hmha_bench {

class BlasMha {
public:
    BlasMha(const MhaWeights &w, int64_t num_heads) : w_(w), H_(num_heads) {}

    // query (N, L, E), key = value (N, S, E) -> out (N, L, E); weights (N, L, S)
    // averaged over heads when not null.
    void forward(const Shape &s, const float *query, const float *kv, bool causal, float *out, float *weights);

private:
    const MhaWeights &w_;
    int64_t H_;
    std::vector<float> q_, k_, v_, attn_, scores_;  // scratch, grown on demand
};

}  // namespace hmha_bench
