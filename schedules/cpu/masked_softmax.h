// CPU schedule for the per-head attention weights. Parallel over batch, head
// and query block; keys are transposed once per head; the scores of a query
// block (query_block x S') are computed once, register-tiled (2 vectors of
// keys x 4 queries), then max, exp-sum and the normalised rows.
#pragma once

#include "Halide.h"
#include "generators/attention_scores.h"
#include "schedules/cpu/scores.h"

namespace hmha_gen::schedules::cpu {

struct MaskedSoftmaxParams {
    int query_block, vector_width;
};

struct MaskedSoftmaxFuncs {
    Halide::Func weights, row_max, row_sum, e;
    AttentionScore sc;
};

inline void schedule_masked_softmax(MaskedSoftmaxFuncs f, const ScoreVars &v, Halide::RDom rj,
                                    Halide::Expr has_masks, const MaskedSoftmaxParams &prm) {
    using namespace Halide;
    const int vw = prm.vector_width;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var io("io"), ii("ii");
    f.weights.split(v.i, io, ii, prm.query_block, guard)
        .reorder(v.j, ii, io, v.h, v.n)
        .parallel(v.n)
        .parallel(v.h)
        .parallel(io)
        .vectorize(v.j, vw, guard);
    f.sc.kt.compute_at(f.weights, v.h);
    schedule_key_transpose(f.sc.kt, v, vw);
    pad_key_rows(f.sc.kt, v.j, f.weights.output_buffer().dim(0).extent());
    f.sc.score.compute_at(f.weights, io);
    schedule_register_tiled_scores(f.sc.score, f.sc, v, has_masks, vw);
    // Row reductions run along the contiguous key axis: vectors of keys folded
    // by a horizontal max / add (atomic() lets Halide reassociate them).
    f.row_max.compute_at(f.weights, io);
    f.row_max.update().atomic().vectorize(rj.x, vw, guard);
    f.e.compute_at(f.weights, io).vectorize(v.j, vw, guard);
    f.row_sum.compute_at(f.weights, io);
    f.row_sum.update().atomic().vectorize(rj.x, vw, guard);
}

}  // namespace hmha_gen::schedules::cpu
