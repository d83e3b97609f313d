// CPU schedule for the projection y(o, r) = b(o) + sum_k Wt(o, k) x(k, r).
// A register-blocked sgemm: each task owns a tile_o x tile_r block of outputs,
// the innermost micro-kernel keeps (tile_o / vector_width) x unroll_r vector
// accumulators in registers and streams k.
//
// pack_w: the task first copies its tile_o columns of W into one contiguous
// k-major panel. W's rows are O floats apart (4 KiB at E = 1024), so a tile's
// few floats of each row land in a handful of L1 sets, and every row group
// streams the panel from L2 again. Measured with hmha_tune (2026-11-27, Zen 4,
// ms per call): on AVX2 (16 registers, the then-default 3-vector x 4-row
// tiles) 2048 x 1024 -> 1024 30.4-30.7 packed against 40.4-41.7, 512 x 512 -> 512 1.64-1.69 against
// 1.75-1.78; on AVX-512 (4-vector tiles, 32 registers) packing is slower
// (21.1-21.6 -> 22.7-22.8; 1.25-1.27 -> 1.41-1.43; 512 x 256 -> 256 0.30 -> 0.35).
// So it is on by default where there are 16 vector registers only.
#pragma once

#include <algorithm>

#include "Halide.h"
#include "schedules/cpu/defaults.h"

namespace hmha_gen::schedules::cpu {

struct LinearParams {
    int tile_o, tile_r, unroll_r, vector_width;
    bool pack_w = false;  // copy each task's columns of W into a contiguous panel first
};

// w: the weights as prod reads them (wrapped when p.pack_w).
inline void schedule_linear(Halide::Func y, Halide::Func prod, Halide::Var o, Halide::Var r,
                            Halide::RVar rk, const LinearParams &p, Halide::Func w) {
    using namespace Halide;
    Var oi("oi"), ri("ri"), rii("rii"), t("t");
    Expr o_extent = y.output_buffer().dim(0).extent();
    Expr r_extent = y.output_buffer().dim(1).extent();

    // Full tiles need the output to be at least one tile in each dimension;
    // smaller problems (heads of width 1, single rows) take the guarded path.
    // specialize() copies the schedule so far, so the fast path is defined first.
    // The rows split into micro-tiles of unroll_r rows (the last one shifted
    // inwards: at most unroll_r - 1 rows computed twice) and those into tasks
    // of tile_r / unroll_r micro-tiles (the last task shorter). Tasks of
    // tile_r rows shifted inwards instead recomputed up to tile_r - 1 rows:
    // 192 rows for 128 with AVX2's 96-row tasks. hmha_tune on Zen 3 (AVX2,
    // 2026-11-28, ms, three alternated rounds, tasks shifted / micro-tiles in
    // shorter tasks): 128 x 512 -> 512 0.70-0.77 / 0.40-0.49, 300 rows
    // 1.35-1.52 / 0.97-1.03, 1000 rows 3.87-3.97 / 3.15-3.47, 512 x 256 -> 256
    // 0.42-0.48 / 0.42-0.46 (bench/results/amd-epyc-zen3-2core-2026-11-28-linear-row-tasks.md).
    y.specialize(o_extent >= p.tile_o && r_extent >= p.tile_r)
        .split(o, o, oi, p.tile_o, TailStrategy::ShiftInwards)
        .split(r, ri, rii, p.unroll_r, TailStrategy::ShiftInwards)
        .split(ri, r, ri, std::max(1, p.tile_r / p.unroll_r), TailStrategy::GuardWithIf)
        .reorder(oi, rii, ri, o, r)
        .fuse(o, r, t)
        .parallel(t)
        .vectorize(oi, p.vector_width)
        .unroll(oi)
        .unroll(rii);

    // Fewer rows than a tile (a decode step's query, short sequences, small
    // batches): a task per tile_o columns of W (packed once) over all the
    // rows, in unguarded groups of `few` rows (then of one), instead of one
    // guarded tile_r-row task per tile_o columns. hmha_tune on Zen 3 (AVX2, W
    // packed, 2026-11-27), ms, the guarded tile before / these tasks,
    // alternated builds: 1024 x 1024 -> 1 row 0.29-0.33 / 0.16-0.19, -> 16
    // rows 1.06-1.22 / 0.33-0.34; 512 x 512 -> 3 rows 0.14-0.15 / 0.07, -> 8
    // rows 0.15-0.19 / 0.06, -> 40 rows 0.59-0.88 / 0.17-0.18; 128 rows and
    // more (full tiles) unchanged.
    const int few = std::min(p.unroll_r, 4);
    for (const int rows : {few, 1}) {
        if (rows >= p.tile_r || (rows == 1 && few == 1)) continue;
        y.specialize(o_extent >= p.tile_o && r_extent >= rows)
            .split(o, t, oi, p.tile_o, TailStrategy::ShiftInwards)
            .split(r, ri, rii, rows, TailStrategy::ShiftInwards)
            .reorder(oi, rii, ri, t)
            .parallel(t)
            .vectorize(oi, p.vector_width)
            .unroll(oi)
            .unroll(rii);
    }

    y.tile(o, r, oi, ri, p.tile_o, p.tile_r, TailStrategy::GuardWithIf)
        .split(ri, ri, rii, p.unroll_r, TailStrategy::GuardWithIf)
        .fuse(o, r, t)
        .parallel(t)
        .vectorize(oi, p.vector_width, TailStrategy::GuardWithIf);
    if (p.pack_w) {
        // The task's tile_o columns of W, k-major and contiguous (tile_o x K
        // floats), read by each of its row groups in order.
        contiguous_copy(w, prod, LoopLevel(y, t), p.vector_width);
    }
    // Input-bound dimensions guard their tails: rounding up would read past W.
    prod.compute_at(y, ri).vectorize(o, p.vector_width, TailStrategy::GuardWithIf);
    prod.update()
        .reorder(o, r, rk)
        .vectorize(o, p.vector_width, TailStrategy::GuardWithIf)
        .unroll(o, std::max(1, p.tile_o / p.vector_width), TailStrategy::GuardWithIf)
        .unroll(r, p.unroll_r, TailStrategy::GuardWithIf);
}

}  // namespace hmha_gen::schedules::cpu
