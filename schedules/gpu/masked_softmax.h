// GPU schedule for the per-head attention weights (the need_weights path, which
// may materialise L x S'): scores as one kernel into a global (S', L, H, N)
// scratch, row max and exp-sum as one thread per row, then the normalised rows.
// One block per (query, head, batch) row for the elementwise kernels; threads
// stride over keys, so reads and writes are coalesced.
#pragma once

#include "Halide.h"
#include "generators/attention_scores.h"

namespace hmha_gen::schedules::gpu {

struct MaskedSoftmaxParams {
    int threads;  // threads per row
};

struct MaskedSoftmaxFuncs {
    Halide::Func weights, row_max, row_sum, e;
    AttentionScore sc;
};

inline void schedule_rowwise(Halide::Func f, const ScoreVars &v, int threads) {
    using namespace Halide;
    Var jo("jo"), ji("ji");
    f.split(v.j, jo, ji, threads, TailStrategy::GuardWithIf)
        .reorder(ji, jo, v.i, v.h, v.n)
        .gpu_blocks(v.i, v.h, v.n)
        .gpu_threads(ji);
}

inline void schedule_per_row(Halide::Func f, const ScoreVars &v, int threads) {
    using namespace Halide;
    Var io("io"), ii("ii");
    f.compute_root()
        .split(v.i, io, ii, threads, TailStrategy::GuardWithIf)
        .gpu_blocks(io, v.h, v.n)
        .gpu_threads(ii);
    f.update()
        .split(v.i, io, ii, threads, TailStrategy::GuardWithIf)
        .gpu_blocks(io, v.h, v.n)
        .gpu_threads(ii);
}

inline void schedule_masked_softmax(MaskedSoftmaxFuncs f, const ScoreVars &v, const MaskedSoftmaxParams &prm) {
    schedule_rowwise(f.weights, v, prm.threads);
    f.sc.score.compute_root();
    schedule_rowwise(f.sc.score, v, prm.threads);
    schedule_per_row(f.row_max, v, prm.threads);
    schedule_per_row(f.row_sum, v, prm.threads);
}

}  // namespace hmha_gen::schedules::gpu
