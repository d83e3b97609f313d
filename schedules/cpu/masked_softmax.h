// CPU schedule for the per-head attention weights. Parallel over batch, head
// and query block; keys are transposed once per head; the scores of a query
// block (query_block x S') are computed once, register-tiled (2 vectors of
// keys x score_tile_rows queries), then max, exp-sum and the normalised rows.
// score_tile_rows defaults to 4 here even with 32 vector registers: 8 made
// softmax_attend_mean 1.5-1.75x slower (hmha_tune, 2026-11-26; 6 was within
// noise of 4), and still 1.1-1.2x once the score tiles no longer guarded
// their key vectors (schedules/cpu/scores.h), while sdpa's scores gain 1-3%
// from 8 (schedules/cpu/sdpa.h) and sdpa_rows' 4-10%.
#pragma once

#include <numeric>

#include "Halide.h"
#include "generators/attention_scores.h"
#include "schedules/cpu/attend.h"
#include "schedules/cpu/defaults.h"
#include "schedules/cpu/scores.h"

namespace hmha_gen::schedules::cpu {

struct MaskedSoftmaxParams {
    int query_block, vector_width;
    int key_chunk = 0;  // keys per chunk of the block's Q.K^T and e.V (0: whole rows)
    int score_tile_rows = 4;  // queries per Q.K^T register tile
    bool copy_values = false;  // sdpa_rows, softmax_attend_mean: each head's V copied into contiguous rows first
};

struct MaskedSoftmaxFuncs {
    Halide::Func weights, row_max, row_sum, e;
    AttentionScore sc;
};

// A query block's softmax, computed at `block`: the register-tiled scores,
// then the row reductions along the contiguous key axis (vectors of keys
// folded by a horizontal max / add; atomic() lets Halide reassociate them) and
// the exponentials.
inline void schedule_block_softmax(MaskedSoftmaxFuncs f, const ScoreVars &v, Halide::RDom rj, Halide::Expr has_masks,
                                   int vw, Halide::LoopLevel block, int key_chunk, int score_tile_rows) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    f.sc.score.compute_at(block);
    schedule_register_tiled_scores(f.sc.score, f.sc, v, has_masks, vw, key_chunk, score_tile_rows);
    f.row_max.compute_at(block);
    f.row_max.update().atomic().vectorize(rj.x, vw, guard);
    f.e.compute_at(block).vectorize(v.j, vw, guard);
    f.row_sum.compute_at(block);
    f.row_sum.update().atomic().vectorize(rj.x, vw, guard);
}

// att (a query block's product with V), computed at `at` with attend's
// register tiles (key_chunk: prm's). It and so the scores it reads cover
// whole register tiles of queries: past L, q and the masks are read through a
// clamp. A block of variable rows kept a guard per row in every tile; whole
// query blocks (bound_extent, until 2026-11-26) computed a block of rows for
// a single query (sdpa_rows at L = 1: 15x the time; L = 129, S = 300 with
// blocks of 128: 2.7x).
inline void schedule_block_attend(Halide::Func att, Halide::Func acc, Halide::LoopLevel at, Halide::Func out,
                                  const ScoreVars &v, Halide::RDom rj, const MaskedSoftmaxParams &prm, int tile_rows) {
    att.compute_at(at).align_extent(v.i, std::lcm(tile_rows, prm.score_tile_rows));
    tile_attend(att, v.d, v.i, acc, v.d, v.i, rj, {prm.query_block, prm.vector_width, tile_rows, prm.key_chunk});
    att.specialize(out.output_buffer().dim(0).extent() % (2 * prm.vector_width) == 0);
}

// `owner` (the weights, or sdpa_rows' out) in parallel query blocks with
// `inner` innermost; K transposed per head of it (rows of `keys`) and the
// block's softmax at its query block.
inline void schedule_query_block_softmax(MaskedSoftmaxFuncs f, Halide::Func owner, Halide::Var inner, Halide::Expr keys,
                                         const ScoreVars &v, Halide::RDom rj, Halide::Expr has_masks,
                                         const MaskedSoftmaxParams &prm) {
    using namespace Halide;
    const int vw = prm.vector_width;
    Var io("io");
    parallel_query_blocks(owner, inner, v.i, v.h, v.n, prm.query_block).vectorize(inner, vw, TailStrategy::GuardWithIf);
    f.sc.kt.compute_at(owner, v.h);
    schedule_key_transpose(f.sc.kt, v, vw, keys);
    schedule_block_softmax(f, v, rj, has_masks, vw, LoopLevel(owner, io), prm.key_chunk, prm.score_tile_rows);
}

inline void schedule_masked_softmax(MaskedSoftmaxFuncs f, const ScoreVars &v, Halide::RDom rj, Halide::Expr has_masks,
                                    const MaskedSoftmaxParams &prm) {
    schedule_query_block_softmax(f, f.weights, v.j, f.weights.output_buffer().dim(0).extent(), v, rj, has_masks, prm);
}

// softmax_attend: the weights as above, and out = e.V / row sum in the same
// query-block loop (compute_with), so that V meets the block's exponentials
// while they are still in L2 (query_block x S' floats) instead of after a
// round trip of every head's weights through memory. The product is computed
// per block in att, with attend's register tiles: tiled directly in out's
// fused loop, its tails' guards were not split off (Halide partitions the
// loops of a block Func, not those of a fused loop) and the accumulators
// lived on the stack, 1.7x slower. With copy_values, each head's V is first
// copied into contiguous rows per (batch, head) task, as in sdpa_rows below.
// In all three kernels the copy wraps V for every consumer: V's one consumer
// is acc, or with key chunks acc's rfactor intermediate, which a wrapper
// for acc alone would miss ("Cannot wrap v_im in acc").
inline void schedule_softmax_attend(MaskedSoftmaxFuncs f, Halide::Func out, Halide::Func att, Halide::Func acc,
                                    Halide::Func values, const ScoreVars &v, Halide::RDom rj, Halide::Expr has_masks,
                                    const MaskedSoftmaxParams &prm, int tile_rows) {
    using namespace Halide;
    schedule_masked_softmax(f, v, rj, has_masks, prm);
    Var io("io");
    parallel_query_blocks(out, v.d, v.i, v.h, v.n, prm.query_block)
        .vectorize(v.d, prm.vector_width, TailStrategy::GuardWithIf)
        .compute_with(f.weights, io);
    schedule_block_attend(att, acc, LoopLevel(out, io), out, v, rj, prm, tile_rows);
    if (prm.copy_values) contiguous_copy(values, Func(), LoopLevel(f.weights, v.h), prm.vector_width);
}

// softmax_attend_mean: as softmax_attend, but parallel over batch and query
// block only, with the block's heads (rh) in turn inside: each head's
// weights add into the block's mean (f.weights, an update over rh) and its
// product with V is written (out, an update over rh too, fused with it), so
// the per-head weights stay in L2 and only their mean reaches memory. K is
// transposed once per batch for every head (per block and head it would be
// transposed L / query_block times over), and with copy_values V is copied
// there too, each head's rows contiguous (as in sdpa_rows below).
inline void schedule_softmax_attend_mean(MaskedSoftmaxFuncs f, Halide::Func out, Halide::Func att, Halide::Func acc,
                                         Halide::Func values, const ScoreVars &v, Halide::RDom rj, Halide::RDom rh,
                                         Halide::Expr has_masks, const MaskedSoftmaxParams &prm, int tile_rows) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var io("io"), ii("ii");
    auto blocks = [&](Stage s, Var inner) {
        s.split(v.i, io, ii, prm.query_block, guard)
            .reorder(inner, ii, rh.x, io, v.n)
            .parallel(v.n)
            .parallel(io)
            .vectorize(inner, prm.vector_width, guard);
    };
    Stage mean = f.weights.update(), written = out.update();
    blocks(mean, v.j);
    blocks(written, v.d);
    written.compute_with(mean, rh.x);
    f.sc.kt.compute_at(f.weights, v.n).parallel(v.h);
    schedule_key_transpose(f.sc.kt, v, prm.vector_width, f.weights.output_buffer().dim(0).extent());
    schedule_block_softmax(f, v, rj, has_masks, prm.vector_width, LoopLevel(f.weights, rh.x), prm.key_chunk,
                           prm.score_tile_rows);
    schedule_block_attend(att, acc, LoopLevel(out, rh.x), out, v, rj, prm, tile_rows);
    if (prm.copy_values) {
        // Every head's V of the batch, each head's rows contiguous.
        Func rows = contiguous_copy(values, Func(), LoopLevel(f.weights, v.n), prm.vector_width);
        std::vector<Var> a = rows.args();  // (d, h, j, n)
        rows.reorder_storage(a[0], a[2], a[1], a[3]).reorder(a[0], a[2], a[1]).parallel(a[1]);
    }
}

// sdpa_rows: softmax_attend's loop nest without the weights: a query block's
// softmax and its product with V, computed at out's query block.
// With copy_values, each head's V (`values`, rows E floats apart where the
// runtime's Sequence scratch holds every head's features in one row) is
// first copied, as K is transposed, into S' contiguous rows of head_dim
// floats, from which every query block's P.V tiles read.
inline void schedule_sdpa_rows(MaskedSoftmaxFuncs f, Halide::Func out, Halide::Func att, Halide::Func acc,
                               Halide::Func values, const ScoreVars &v, Halide::RDom rj, Halide::Expr keys,
                               Halide::Expr has_masks, const MaskedSoftmaxParams &prm, int tile_rows) {
    using namespace Halide;
    schedule_query_block_softmax(f, out, v.d, keys, v, rj, has_masks, prm);
    schedule_block_attend(att, acc, LoopLevel(out, Var("io")), out, v, rj, prm, tile_rows);
    if (prm.copy_values) contiguous_copy(values, Func(), LoopLevel(out, v.h), prm.vector_width);
}

}  // namespace hmha_gen::schedules::cpu
