// CPU schedule for the per-head attention weights: one task per (query block,
// head, batch); the scores of the block's rows are computed once into a
// query_block x S' scratch, then max, exp-sum and the normalised row.
#pragma once

#include "Halide.h"
#include "generators/attention_scores.h"

namespace hmha_gen::schedules::cpu {

struct MaskedSoftmaxParams {
    int query_block, vector_width;
};

struct MaskedSoftmaxFuncs {
    Halide::Func weights, row_max, row_sum, e;
    AttentionScore sc;
};

inline void schedule_masked_softmax(MaskedSoftmaxFuncs f, const ScoreVars &v, Halide::RDom rj,
                                    const MaskedSoftmaxParams &prm) {
    using namespace Halide;
    const int vw = prm.vector_width;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var io("io"), ii("ii"), jo("jo"), ji("ji");
    f.weights.split(v.i, io, ii, prm.query_block, guard)
        .reorder(v.j, ii, io, v.h, v.n)
        .parallel(v.n)
        .parallel(v.h)
        .parallel(io)
        .vectorize(v.j, vw, guard);
    f.sc.kt.compute_at(f.weights, io).vectorize(v.j, vw, guard);
    f.sc.dot.compute_at(f.weights, io).vectorize(v.j, vw, guard);
    RVar rd(f.sc.rd.x);
    f.sc.dot.update()
        .split(v.j, jo, ji, 2 * vw, guard)
        .split(v.i, io, ii, 4, guard)
        .reorder(ji, ii, rd, jo, io)
        .vectorize(ji, vw, guard)
        .unroll(ji)
        .unroll(ii);
    f.sc.score.compute_at(f.weights, io).vectorize(v.j, vw, guard);
    f.row_max.compute_at(f.weights, io);
    f.e.compute_at(f.weights, io).vectorize(v.j, vw, guard);
    f.row_sum.compute_at(f.weights, io);
}

}  // namespace hmha_gen::schedules::cpu
