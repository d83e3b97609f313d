// The register-tiled Q.K^T shared by the CPU schedules of sdpa (one key block)
// and masked_softmax (a query block's whole row): `score` (the masked score, or
// a Func wrapping it) is tiled 2 vectors of keys x tile_rows queries, and the
// dot product is computed per tile so its accumulators stay in registers.
// Without masks the mask loads are specialized away.
//
// tile_rows: 2 x tile_rows accumulators, 2 vectors of K^T and a broadcast q
// must fit the vector registers (8 rows need 32: AVX-512, NEON). Each kernel
// takes it as its score_tile_rows GeneratorParam, which the tuner sweeps.
#pragma once

#include "Halide.h"
#include "generators/attention_scores.h"

namespace hmha_gen::schedules::cpu {

// key_chunk (a multiple of 2 vectors; 0: none): the tiles run a chunk of keys
// at a time for every query of the block, so that chunk of K^T is read from L1
// by each row of tiles instead of the head's whole K^T streaming past each.
inline void schedule_register_tiled_scores(Halide::Func score, const AttentionScore &sc, const ScoreVars &v,
                                           Halide::Expr has_masks, int vw, int key_chunk, int tile_rows) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var jo("jo"), ji("ji"), it("it"), iti("iti"), jc("jc");
    // Whole tiles of keys: a score block of S keys (the softmax kernels')
    // otherwise guarded every second vector inside the dot's head-dim loop,
    // which cost masked_softmax 12% at S = 2048 and sdpa_rows 1.5x
    // (bench/results/amd-epyc-zen4-2core-2026-11-26-sdpa-rows-experiment.md).
    score.align_extent(v.j, 2 * vw);
    for (Stage s : {score.specialize(!has_masks), Stage(score)}) {
        s.split(v.j, jo, ji, 2 * vw, guard)
            .split(v.i, it, iti, tile_rows, guard)
            .reorder(ji, iti, jo, it)
            .vectorize(ji, vw)
            .unroll(ji)
            .unroll(iti);
        if (key_chunk > 0) s.split(jo, jc, jo, key_chunk / (2 * vw), guard).reorder(ji, iti, jo, it, jc);
    }
    // Constant-size tiles even where the last one is partial; keys round up
    // (they are read through a clamp).
    Func dot = sc.dot;
    dot.compute_at(score, jo)
        .bound_storage(v.j, 2 * vw)
        .bound_storage(v.i, tile_rows)
        .store_in(MemoryType::Stack)
        .vectorize(v.j, vw, TailStrategy::RoundUp)
        .unroll(v.j)
        .unroll(v.i);
    dot.update()
        .reorder(v.j, v.i, sc.rd.x)
        .vectorize(v.j, vw, TailStrategy::RoundUp)
        .unroll(v.j)
        .unroll(v.i);
}

// Schedules the per-head transpose kt(j, d) = k(d, j), every CPU kernel's
// that transposes K itself (sdpa unless K arrives transposed, masked_softmax,
// softmax_attend, softmax_attend_mean):
// - a vector of keys is gathered from vw rows of K at a time, for every d
//   before the next vector, so those rows' cache lines are read once (d outer
//   re-read each line for every d in it);
// - rows of `keys` (the keys the scores read) are padded to a multiple of 16
//   floats plus 16. A tile of Q.K^T reads one short run of keys from each of
//   head_dim rows; unpadded, a power-of-two key count puts those rows a
//   multiple of 4 KiB apart, in the same L1 set, and they evict each other
//   (masked_softmax at S = 2048 measured 15% faster padded, at S = 1024 8%;
//   sdpa 10-11% at S = 2048, schedules/cpu/sdpa.h).
inline void schedule_key_transpose(Halide::Func kt, const ScoreVars &v, int vw, Halide::Expr keys) {
    Halide::Var jo("kt_jo"), ji("kt_ji");
    kt.split(v.j, jo, ji, vw, Halide::TailStrategy::GuardWithIf).reorder(ji, v.d, jo).vectorize(ji);
    kt.bound_storage(v.j, ((keys + 15) / 16) * 16 + 16);
}

}  // namespace hmha_gen::schedules::cpu
