// CPU schedule for the fused SDPA. Parallel over batch, head and query block
// (nested, not fused: fusing would blur bounds inference of the masks); keys
// are transposed once per head (unless they arrive transposed: the runtime's
// Scratch::PerHead writes K^T with padded rows itself) into rows padded as
// masked_softmax's are (schedule_key_transpose over kt_keys, the keys rounded
// up to whole key blocks); then for each query block the online-softmax scan
// walks key blocks, and every per-block Func (scores, exponentials, block
// sums, P.V) lives in a key_block x query_block scratch computed at the scan's
// step, so memory is O(S' x D + key_block x query_block) per thread whatever
// L is. A query block's q is read only while its state is computed, before
// its out is written (the runtime's Scratch::PerHead passes one buffer as
// both): keep i's tail GuardWithIf, as ShiftInwards would recompute rows
// already written.
// The block max and exp-sum keep one vector of running values per query
// (lane_reduction, reduction_vectors = 1), folded once per block: 1.5-2.5%
// faster at S = 2048 than a horizontal max / add per vector of keys; 2 or 4
// vectors measured no faster, and the whole-row kernels (variable key counts)
// measured up to 9% slower with it, so they keep atomic().vectorize
// (bench/results/amd-epyc-zen4-2core-2026-11-27-lane-reductions-experiment.md).
// The two matmuls (Q.K^T and P.V) accumulate in register tiles of
// 2 vectors x score_tile_rows queries (Q.K^T) and 2 vectors x tile_rows queries
// (P.V); both default to 8 with 32 vector registers, 4 with 16, where a
// score tile that does not fit (8 rows) means 6-row tiles for both in query
// blocks of whole tiles (defaults.h, sdpa_tiles): a wrapper Func owns the
// block, the reduction Func is computed per tile so LLVM keeps its
// accumulators in registers.
//
// Measured with hmha_tune --variants on AVX-512 (2026-11-26; key blocks of
// 512, query blocks of 64): unpadded kt rows cost 10-11% at S = 2048
// ((1, 2048, 2048, 512, 8): 56.0 ms, padded 50.5; (1, 4096, 2048, 512, 8):
// 111.1, padded 100.2), and 8-query score tiles then gain 1-3% over 4 (50.0,
// 99.1; 13.1 against 13.5 ms at (4, 512, 512, 512, 8)). Together, the forward
// with Scratch::Sequence: 155 -> 145 ms cross at (1, 4096, 2048, 512, 8),
// 220 -> 205-211 self at (1, 2048, 2048, 1024, 16); with Scratch::PerHead
// (padded K^T already) unchanged. Wider score tiles (3 or 4 vectors of keys),
// P.V tiles of 4 vectors x 4 or 6 queries, and Q.K^T in chunks of 32, 64 or
// 128 keys for every query of the block (before and after the padding) were
// no faster (bench/results/amd-epyc-zen4-2core-2026-11-26-sdpa-tiles-experiment.md).
// With copy_values, each head's V is first copied into S' contiguous rows of
// head_dim floats where K is transposed (per (batch, head) task), as the
// whole-row kernels do (masked_softmax.h): in the runtime's Sequence path V's
// rows are E floats apart, and a key block's P.V tiles walking rows 4 KiB
// apart (E = 1024) miss L1 on every row. Measured with hmha_tune --variants
// on AVX2 (Zen 3, 2026-11-27; key blocks of 512, query blocks of 32, ms,
// plain / copied per head / copied per key block at the scan's step):
// (1, 256, 4096, 1024, 16) 60-68 / 50-59 / 52-60; (4, 128, 2048, 512, 8)
// 29-31 / 25-29 / 26-27; (1, 16, 2048, 1024, 16) 8.5-8.9 / 7.6-7.7 / 7.8-8.0;
// (2, 256, 2048, 256, 4) 14.0-14.6 / 13.3-14.2 / 15.8-16.8.
#pragma once

#include "Halide.h"
#include "schedules/cpu/defaults.h"
#include "generators/attention_scores.h"
#include "schedules/cpu/scores.h"

namespace hmha_gen::schedules::cpu {

struct SdpaParams {
    int key_block, query_block, vector_width;
    int tile_rows;  // queries per P.V register tile (register_tile_rows)
    bool keys_transposed = false;  // K^T is the input: no per-head transpose
    int score_tile_rows = 4;  // queries per Q.K^T register tile
    int reduction_vectors = 0;  // running values of the block max / sum, in vectors (0: fold each vector)
    bool copy_values = false;  // each head's V copied into contiguous rows first
};

struct SdpaFuncs {
    Halide::Func out, state, block_max, block_sum, block_pv, p, score;
    AttentionScore sc;
    Halide::Func kc, vc;
};

// A key block's reduction r (max or sum along the contiguous key axis rj)
// with `lanes` running values (rfactor; lanes divides the block), folded into
// one by a single horizontal max / add at the block's end; `row` is r's
// innermost pure Var. atomic().vectorize(rj) instead folds every vector.
inline void lane_reduction(Halide::Func r, Halide::RDom rj, Halide::Var row, int lanes) {
    using namespace Halide;
    RVar rjo("rjo"), rji("rji");
    Var u("u");
    Func part = r.update().split(rj.x, rjo, rji, lanes).rfactor(rji, u);
    part.compute_at(r, row).vectorize(u);
    part.update().reorder(u, rjo).vectorize(u);
    r.update().atomic().vectorize(rji);
}

inline void schedule_sdpa(SdpaFuncs f, const ScoreVars &v, Halide::Var kb, Halide::Var jj, Halide::RDom rj,
                          Halide::RDom rb, Halide::Expr has_masks, const SdpaParams &prm,
                          Halide::Expr kt_keys) {
    using namespace Halide;
    const int vw = prm.vector_width;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var io("io"), d_o("d_o"), di("di"), it("it"), iti("iti");

    parallel_query_blocks(f.out, v.d, v.i, v.h, v.n, prm.query_block).vectorize(v.d, vw, guard);

    if (!prm.keys_transposed) {
        f.sc.kt.compute_at(f.out, v.h);
        schedule_key_transpose(f.sc.kt, v, vw, kt_keys);
    }

    f.state.compute_at(f.out, io).vectorize(v.d, vw, guard);
    f.state.update().reorder(v.d, v.i, rb, v.h, v.n).vectorize(v.d, vw, guard);

    // Scores of one key block.
    f.score.compute_at(f.state, rb);
    schedule_register_tiled_scores(f.score, f.sc, v, has_masks, vw, 0, prm.score_tile_rows);

    // Block reductions run along the contiguous key axis (horizontal max / add).
    f.block_max.compute_at(f.state, rb);
    f.p.compute_at(f.state, rb).vectorize(jj, vw, guard);
    f.block_sum.compute_at(f.state, rb);
    const int lanes = prm.reduction_vectors * vw;
    if (lanes > 0 && prm.key_block % lanes == 0) {
        lane_reduction(f.block_max, rj, kb, lanes);
        lane_reduction(f.block_sum, rj, kb, lanes);
    } else {
        f.block_max.update().atomic().vectorize(rj.x, vw);
        f.block_sum.update().atomic().vectorize(rj.x, vw);
    }

    // P.V of one key block: register-tiled through a wrapper.
    Func pv_tile = f.block_pv.in(f.state);
    pv_tile.compute_at(f.state, rb)
        .split(v.d, d_o, di, 2 * vw, guard)
        .split(v.i, it, iti, prm.tile_rows, guard)
        .reorder(di, iti, d_o, it)
        .vectorize(di, vw)
        .unroll(di)
        .unroll(iti);
    // d reads V directly, so its vectors are guarded (head_dim need not be a multiple).
    f.block_pv.compute_at(pv_tile, d_o)
        .bound_storage(v.d, 2 * vw)
        .bound_storage(v.i, prm.tile_rows)
        .store_in(MemoryType::Stack)
        .vectorize(v.d, vw, guard)
        .unroll(v.d)
        .unroll(v.i);
    f.block_pv.update().reorder(v.d, v.i, rj.x).vectorize(v.d, vw, guard).unroll(v.d).unroll(v.i);
    if (prm.copy_values) contiguous_copy(f.vc, f.block_pv, LoopLevel(f.out, v.h), vw);
}

}  // namespace hmha_gen::schedules::cpu
