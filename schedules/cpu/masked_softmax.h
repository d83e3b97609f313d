// CPU schedule for the per-head attention weights. Parallel over batch, head
// and query block; keys are transposed once per head; the scores of a query
// block (query_block x S') are computed once, register-tiled (2 vectors of
// keys x 4 queries), then max, exp-sum and the normalised rows.
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
                                    Halide::Expr has_masks, const MaskedSoftmaxParams &prm) {
    using namespace Halide;
    const int vw = prm.vector_width;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var io("io"), ii("ii"), jo("jo"), ji("ji"), it("it"), iti("iti");
    f.weights.split(v.i, io, ii, prm.query_block, guard)
        .reorder(v.j, ii, io, v.h, v.n)
        .parallel(v.n)
        .parallel(v.h)
        .parallel(io)
        .vectorize(v.j, vw, guard);
    f.sc.kt.compute_at(f.weights, v.h).vectorize(v.j, vw, guard);
    f.sc.score.compute_at(f.weights, io);
    for (Stage s : {f.sc.score.specialize(!has_masks), Stage(f.sc.score)}) {
        s.split(v.j, jo, ji, 2 * vw, guard)
            .split(v.i, it, iti, 4, guard)
            .reorder(ji, iti, jo, it)
            .vectorize(ji, vw)
            .unroll(ji)
            .unroll(iti);
    }
    f.sc.dot.compute_at(f.sc.score, jo)
        .bound_storage(v.j, 2 * vw)
        .bound_storage(v.i, 4)
        .store_in(MemoryType::Stack)
        .vectorize(v.j, vw, TailStrategy::RoundUp)
        .unroll(v.j)
        .unroll(v.i);
    f.sc.dot.update()
        .reorder(v.j, v.i, f.sc.rd.x)
        .vectorize(v.j, vw, TailStrategy::RoundUp)
        .unroll(v.j)
        .unroll(v.i);
    // Row reductions run along the contiguous key axis: vectors of keys folded
    // by a horizontal max / add (atomic() lets Halide reassociate them).
    f.row_max.compute_at(f.weights, io);
    f.row_max.update().atomic().vectorize(rj.x, vw, guard);
    f.e.compute_at(f.weights, io).vectorize(v.j, vw, guard);
    f.row_sum.compute_at(f.weights, io);
    f.row_sum.update().atomic().vectorize(rj.x, vw, guard);
}

}  // namespace hmha_gen::schedules::cpu
