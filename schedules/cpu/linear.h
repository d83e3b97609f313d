// CPU schedule for the projection y(o, r) = b(o) + sum_k Wt(o, k) x(k, r).
// A register-blocked sgemm: each task owns a tile_o x tile_r block of outputs,
// the innermost micro-kernel keeps (tile_o / vector_width) x unroll_r vector
// accumulators in registers and streams k.
#pragma once

#include "Halide.h"

#include <algorithm>

namespace hmha_gen::schedules::cpu {

struct LinearParams {
    int tile_o, tile_r, unroll_r, vector_width;
};

inline void schedule_linear(Halide::Func y, Halide::Func prod, Halide::Var o, Halide::Var r,
                            Halide::RVar rk, const LinearParams &p) {
    using namespace Halide;
    Var oi("oi"), ri("ri"), rii("rii"), t("t");
    Expr o_extent = y.output_buffer().dim(0).extent();
    Expr r_extent = y.output_buffer().dim(1).extent();

    // Full tiles need the output to be at least one tile in each dimension;
    // smaller problems (heads of width 1, single rows) take the guarded path.
    // specialize() copies the schedule so far, so the fast path is defined first.
    y.specialize(o_extent >= p.tile_o && r_extent >= p.tile_r)
        .tile(o, r, oi, ri, p.tile_o, p.tile_r, TailStrategy::ShiftInwards)
        .split(ri, ri, rii, p.unroll_r)
        .fuse(o, r, t)
        .parallel(t)
        .vectorize(oi, p.vector_width)
        .unroll(oi)
        .unroll(rii);

    y.tile(o, r, oi, ri, p.tile_o, p.tile_r, TailStrategy::GuardWithIf)
        .split(ri, ri, rii, p.unroll_r, TailStrategy::GuardWithIf)
        .fuse(o, r, t)
        .parallel(t)
        .vectorize(oi, p.vector_width, TailStrategy::GuardWithIf);
    // Input-bound dimensions guard their tails: rounding up would read past W.
    prod.compute_at(y, ri).vectorize(o, p.vector_width, TailStrategy::GuardWithIf);
    prod.update()
        .reorder(o, r, rk)
        .vectorize(o, p.vector_width, TailStrategy::GuardWithIf)
        .unroll(o, std::max(1, p.tile_o / p.vector_width), TailStrategy::GuardWithIf)
        .unroll(r, p.unroll_r, TailStrategy::GuardWithIf);
}

}  // namespace hmha_gen::schedules::cpu
