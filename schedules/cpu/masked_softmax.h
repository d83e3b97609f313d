// CPU schedule for the per-head attention weights. Parallel over batch, head
// and query block; keys are transposed once per head; the scores of a query
// block (query_block x S') are computed once, register-tiled (2 vectors of
// keys x 4 queries), then max, exp-sum and the normalised rows.
#pragma once

#include "Halide.h"
#include "generators/attention_scores.h"
#include "schedules/cpu/attend.h"
#include "schedules/cpu/defaults.h"
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
    Var io("io");
    parallel_query_blocks(f.weights, v.j, v.i, v.h, v.n, prm.query_block).vectorize(v.j, vw, guard);
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

// softmax_attend: the weights as above, and out = e.V / row sum in the same
// query-block loop (compute_with), so that V meets the block's exponentials
// while they are still in L2 (query_block x S' floats) instead of after a
// round trip of every head's weights through memory. The product is computed
// per block in att, with attend's register tiles: tiled directly in out's
// fused loop, its tails' guards were not split off (Halide partitions the
// loops of a block Func, not those of a fused loop) and the accumulators
// lived on the stack, 1.7x slower.
inline void schedule_softmax_attend(MaskedSoftmaxFuncs f, Halide::Func out, Halide::Func att, Halide::Func acc,
                                    const ScoreVars &v, Halide::RDom rj, Halide::Expr has_masks,
                                    const MaskedSoftmaxParams &prm, int tile_rows) {
    using namespace Halide;
    schedule_masked_softmax(f, v, rj, has_masks, prm);
    Var io("io");
    parallel_query_blocks(out, v.d, v.i, v.h, v.n, prm.query_block)
        .vectorize(v.d, prm.vector_width, TailStrategy::GuardWithIf)
        .compute_with(f.weights, io);
    // Whole query blocks (the scores read q and the masks through a clamp):
    // a block of variable rows kept a guard per row in every tile.
    att.compute_at(out, io).bound_extent(v.i, prm.query_block);
    tile_attend(att, v.d, v.i, acc, v.d, v.i, rj, {prm.query_block, prm.vector_width, tile_rows});
    att.specialize(out.output_buffer().dim(0).extent() % (2 * prm.vector_width) == 0);
}

}  // namespace hmha_gen::schedules::cpu
