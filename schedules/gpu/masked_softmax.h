// GPU schedule for the per-head attention weights (the need_weights path, which
// may materialise L x S'): scores as one kernel into a global (S', L, H, N)
// scratch (one key per thread, or tiled: key_tile > 0), the row max and
// exp-sum (one thread per row, or a block per row: split_rows, or inside the
// next kernel's block of each row: fused_rows), then the normalised rows, a
// block per (query, head, batch) row with threads striding over keys, so
// reads and writes are coalesced. Tuned for the H100: tiled
// scores and split rows, 9x the untuned default (bench/results/h100-2026-11-26.md);
// fused rows 1-5% faster again at every shape (h100-2026-11-27.md).
#pragma once

#include "Halide.h"
#include "generators/attention_scores.h"

namespace hmha_gen::schedules::gpu {

struct MaskedSoftmaxParams {
    int threads;  // threads per row
    // key_tile > 0: the scores as a tiled product (schedule_scores_tiled): a
    // block per key_tile x query_tile tile, tile_j x tile_i scores per thread
    // in registers, so a block reads its keys once for query_tile queries
    // (from global memory through L1: staging them in shared memory would
    // bound head_dim, which this unfused path must not, at 48 KiB a block).
    // 0: a block per query row, one key per thread (each block then reads
    // all of a head's keys, uncoalesced: 37 of the 44 ms at
    // (1, 4096, 4096, 512, 8) on an H100, bench/results/h100-2026-11-26.md).
    int key_tile, query_tile, tile_j, tile_i;
    // Row max and sum: a block per row, `threads` threads each reducing a
    // strided slice of the row (coalesced) and one thread the partial results
    // (rfactor), instead of one thread per row walking it (uncoalesced).
    bool split_rows;
    // Row max and sum computed inside the normalising kernel, by each row's
    // block (split over its threads as with split_rows, the partial results
    // in shared memory), instead of two kernels of their own: one kernel and
    // one pass over the row (L1-resident) instead of three kernels and three
    // passes over the (S', L) scores in global memory.
    bool fused_rows;
};

struct MaskedSoftmaxFuncs {
    Halide::Func weights, row_max, row_sum, e;
    AttentionScore sc;
    Halide::RDom rj;  // over the keys: the row reductions
};

inline void schedule_rowwise(Halide::Func f, const ScoreVars &v, int threads) {
    using namespace Halide;
    Var jo("jo"), ji("ji");
    f.split(v.j, jo, ji, threads, TailStrategy::GuardWithIf)
        .reorder(ji, jo, v.i, v.h, v.n)
        .gpu_blocks(v.i, v.h, v.n)
        .gpu_threads(ji);
}

// One thread per (query, head, batch) row: a stage of a row reduction f(i, h, n).
inline void schedule_thread_per_row(Halide::Stage s, const ScoreVars &v, int threads) {
    using namespace Halide;
    Var io("io"), ii("ii");
    s.split(v.i, io, ii, threads, TailStrategy::GuardWithIf).gpu_blocks(io, v.h, v.n).gpu_threads(ii);
}

inline void schedule_per_row(Halide::Func f, const ScoreVars &v, int threads) {
    f.compute_root();
    schedule_thread_per_row(f, v, threads);
    schedule_thread_per_row(f.update(), v, threads);
}

// f's reduction over rj split over `threads` threads, each reducing a strided
// slice of the row (coalesced) into shared memory at `at` (rfactor); f then
// combines their results.
inline void split_over_threads(Halide::Func f, Halide::RDom rj, int threads, const Halide::LoopLevel &at) {
    using namespace Halide;
    RVar rjo("rjo"), rji("rji");
    Var u("u");
    Func part = f.update().split(rj.x, rjo, rji, threads, TailStrategy::GuardWithIf).rfactor(rji, u);
    part.compute_at(at).store_in(MemoryType::GPUShared).gpu_threads(u);
    part.update().gpu_threads(u);
}

// A row reduction f(i, h, n) over rj (split_rows): a block per row.
inline void schedule_split_row(Halide::Func f, Halide::RDom rj, const ScoreVars &v, int threads) {
    split_over_threads(f, rj, threads, Halide::LoopLevel(f, v.i));
    f.compute_root();
    schedule_thread_per_row(f, v, threads);
    f.update().gpu_blocks(v.i, v.h, v.n);
}

// A row reduction f(i, h, n) over rj inside the block of `weights` that
// normalises row (i, h, n) (fused_rows): threads partial results, then one
// thread combines them, all at block level.
inline void schedule_block_row(Halide::Func f, Halide::Func weights, Halide::RDom rj, const ScoreVars &v,
                               int threads) {
    split_over_threads(f, rj, threads, Halide::LoopLevel(weights, v.i));
    f.compute_at(weights, v.i).store_in(Halide::MemoryType::GPUShared);
}

// The scores as a tiled product into their global scratch (key_tile > 0).
// Past the last query the dot products read the last query (the generator
// clamps the query axis); past the last key, the last key.
inline void schedule_scores_tiled(MaskedSoftmaxFuncs f, const ScoreVars &v, const MaskedSoftmaxParams &prm) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    const int tj = prm.tile_j, ti = prm.tile_i;
    Var jo("jo"), ji("ji"), jv("jv"), io("io"), ii("ii"), iv("iv"), hn("hn");
    f.sc.score.compute_root()
        .split(v.j, jo, ji, prm.key_tile, guard)
        .split(v.i, io, ii, prm.query_tile, guard)
        .split(ji, ji, jv, tj, guard)
        .split(ii, ii, iv, ti, guard)
        .reorder(jv, iv, ji, ii, jo, io, v.h, v.n)
        .fuse(v.h, v.n, hn)
        .gpu_blocks(jo, io, hn)
        .gpu_threads(ji, ii)
        .unroll(jv)
        .unroll(iv);
    f.sc.dot.compute_at(f.sc.score, ji)
        .store_in(MemoryType::Register)
        .bound_extent(v.j, tj)
        .bound_extent(v.i, ti)
        .bound_extent(v.h, 1)
        .bound_extent(v.n, 1)
        .unroll(v.j)
        .unroll(v.i);
    f.sc.dot.update().reorder(v.j, v.i, f.sc.rd.x).unroll(v.j).unroll(v.i).unroll(f.sc.rd.x, 4, guard);
}

inline void schedule_masked_softmax(MaskedSoftmaxFuncs f, const ScoreVars &v, const MaskedSoftmaxParams &prm) {
    schedule_rowwise(f.weights, v, prm.threads);
    if (prm.key_tile > 0) {
        schedule_scores_tiled(f, v, prm);
    } else {
        f.sc.score.compute_root();
        schedule_rowwise(f.sc.score, v, prm.threads);
    }
    if (prm.fused_rows) {
        schedule_block_row(f.row_max, f.weights, f.rj, v, prm.threads);
        schedule_block_row(f.row_sum, f.weights, f.rj, v, prm.threads);
    } else if (prm.split_rows) {
        schedule_split_row(f.row_max, f.rj, v, prm.threads);
        schedule_split_row(f.row_sum, f.rj, v, prm.threads);
    } else {
        schedule_per_row(f.row_max, v, prm.threads);
        schedule_per_row(f.row_sum, v, prm.threads);
    }
}

}  // namespace hmha_gen::schedules::gpu
