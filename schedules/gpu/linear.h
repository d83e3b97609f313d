// GPU schedule for the projection y(o, r) = b(o) + sum_k Wt(o, k) x(k, r).
// API-neutral (gpu_blocks / gpu_threads only): the same schedule compiles for
// CUDA and OpenCL. Each thread owns cols_per_thread adjacent output features o
// for rows_per_thread rows, accumulating in registers; a block is
// threads_o x threads_r threads. With one feature per thread consecutive
// threads read consecutive o of Wt (coalesced) and x(k, r) is a broadcast
// within a warp; more features per thread (a register tile, as in Halide's
// apps/cuda_mat_mul) load fewer values per multiply-add: cols + rows loads for
// cols * rows of them at each k.
//
// vector_loads: a thread's cols_per_thread features are loaded from Wt as one
// vector (float4 for 4) instead of cols scalar loads 4 bytes apart across the
// warp (which used 7.2 of every 32 bytes the L1 fetched on an H100:
// bench/results/h100-2026-11-26.md). Wt must then be 16-byte aligned with a
// row stride that is a multiple of 4 floats: the generator specializes on the
// stride, and the runtime's weights are whole allocations. k_unroll: the
// reduction over k unrolled, so several k's loads are in flight together.
//
// vector_x: each thread's rows of x for k_unroll consecutive k staged in
// registers first, loaded along k as vectors (x's rows are contiguous in k;
// as x.in() in Halide's apps/cuda_mat_mul), instead of a scalar load of x per
// row and k. The staged block always spans k_unroll values of k: the
// pipeline asks for x's rows rounded up to a multiple of k_unroll (its
// bounds check rejects others), and vectors need x 16-byte aligned: the
// runtime calls such a kernel only where both hold.
#pragma once

#include "Halide.h"

namespace hmha_gen::schedules::gpu {

struct LinearParams {
    int threads_o, threads_r, rows_per_thread, cols_per_thread;
    bool vector_loads;
    int k_unroll;
    bool vector_x = false;
};

inline void schedule_linear(Halide::Func y, Halide::Func prod, Halide::Func x_in, Halide::Var o, Halide::Var r,
                            Halide::RVar rk, const LinearParams &p) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var oo("oo"), oi("oi"), oii("oii"), ro("ro"), ri("ri"), rii("rii");
    y.split(o, oo, oi, p.threads_o * p.cols_per_thread, guard)
        .split(r, ro, ri, p.threads_r * p.rows_per_thread, guard)
        .split(ri, ri, rii, p.rows_per_thread, guard);
    if (p.cols_per_thread > 1) {
        y.split(oi, oi, oii, p.cols_per_thread, guard).reorder(oii, rii, oi, ri, oo, ro).unroll(oii);
    } else {
        y.reorder(rii, oi, ri, oo, ro);
    }
    y.gpu_blocks(oo, ro).gpu_threads(oi, ri).unroll(rii);
    prod.compute_at(y, oi)
        .bound_storage(o, p.cols_per_thread)
        .bound_storage(r, p.rows_per_thread)
        .store_in(MemoryType::Register)
        .unroll(r);
    prod.update().reorder(o, r, rk).unroll(r);
    if (p.vector_loads) {
        prod.vectorize(o);
        prod.update().vectorize(o);
    } else {
        prod.unroll(o);
        prod.update().unroll(o);
    }
    if (p.vector_x) {
        RVar rko("rko"), rki("rki");
        prod.update().split(rk, rko, rki, p.k_unroll, guard).reorder(o, r, rki, rko).unroll(rki);
        x_in.compute_at(prod, rko)
            .bound_extent(x_in.args()[0], p.k_unroll)
            .store_in(MemoryType::Register)
            .vectorize(x_in.args()[0], std::min(p.k_unroll, 4))  // float4: wider ones split into 8-byte loads
            .unroll(x_in.args()[0])
            .unroll(x_in.args()[1]);
    } else if (p.k_unroll > 1) {
        prod.update().unroll(rk, p.k_unroll, guard);
    }
}

// split_k: the reduction over k cut into split_k chunks summed by threads of
// their own (prod's rfactor, an intermediate (O, R, split_k) in device memory,
// a launch of its own), then the chunks' sums added per output. For
// projections of a few rows (a decode step's one query), where each output's
// k-long chain of dependent loads and multiply-adds is the whole time; one
// thread per output feature and chunk, threads_o features a block.
inline void schedule_linear_split_k(Halide::Func y, Halide::Func prod, Halide::Var o, Halide::Var r, Halide::RVar rk,
                                    Halide::Expr k_extent, int threads_o, int split_k) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var u("u"), oo("oo"), oi("oi");
    RVar rko("rko"), rki("rki");
    prod.update().split(rk, rko, rki, (k_extent + split_k - 1) / split_k, guard);
    Func chunks = prod.update().rfactor(rko, u);
    chunks.compute_root().split(o, oo, oi, threads_o, guard).reorder(oi, r, oo, u).gpu_blocks(oo, u).gpu_threads(oi);
    chunks.update()
        .split(o, oo, oi, threads_o, guard)
        .reorder(rki, oi, r, oo, u)
        .gpu_blocks(oo, u)
        .gpu_threads(oi);
    y.split(o, oo, oi, threads_o, guard).reorder(oi, oo, r).gpu_blocks(oo, r).gpu_threads(oi);
    prod.compute_at(y, oi).store_in(MemoryType::Register);
}

}  // namespace hmha_gen::schedules::gpu
