// GPU schedule for the projection y(o, r) = b(o) + sum_k Wt(o, k) x(k, r).
// API-neutral (gpu_blocks / gpu_threads only): the same schedule compiles for
// CUDA and OpenCL. Each thread owns one output feature o for rows_per_thread
// rows, accumulating in registers; a block is threads_o x threads_r threads.
// Consecutive threads read consecutive o of Wt (coalesced); x(k, r) is a
// broadcast within a warp.
#pragma once

#include "Halide.h"

namespace hmha_gen::schedules::gpu {

struct LinearParams {
    int threads_o, threads_r, rows_per_thread;
};

inline void schedule_linear(Halide::Func y, Halide::Func prod, Halide::Var o, Halide::Var r, Halide::RVar rk,
                            const LinearParams &p) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var oo("oo"), oi("oi"), ro("ro"), ri("ri"), rii("rii");
    y.split(o, oo, oi, p.threads_o, guard)
        .split(r, ro, ri, p.threads_r * p.rows_per_thread, guard)
        .split(ri, ri, rii, p.rows_per_thread, guard)
        .reorder(rii, oi, ri, oo, ro)
        .gpu_blocks(oo, ro)
        .gpu_threads(oi, ri)
        .unroll(rii);
    prod.compute_at(y, oi)
        .bound_storage(o, 1)
        .bound_storage(r, p.rows_per_thread)
        .store_in(MemoryType::Register)
        .unroll(r);
    prod.update().reorder(r, o, rk).unroll(r);
}

}  // namespace hmha_gen::schedules::gpu
