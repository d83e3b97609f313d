// GPU schedules for weights @ V and the mean over heads. API-neutral.
#pragma once

#include "Halide.h"

namespace hmha_gen::schedules::gpu {

struct AttendParams {
    int threads_d, threads_i;
    // Queries per thread, accumulated in registers: each V value loaded feeds
    // tile_i multiply-adds (its weights are broadcasts across the d threads).
    int tile_i;
    int key_unroll;
    // Head dims per thread (a tile_d x tile_i register tile: each weight
    // loaded feeds tile_d multiply-adds too), and those tile_d values of V
    // loaded as one aligned vector (vector_loads, CUDA: the generator
    // specializes on V's strides; float4 for 4) instead of tile_d scalar
    // loads 4 * tile_d bytes apart across the warp.
    int tile_d;
    bool vector_loads;
};

// A block per (query tile, head, batch); thread (d, i) accumulates its
// tile_d x tile_i outputs in registers over keys. Threads along d read V
// coalesced (with tile_d > 1, as vectors where vector_loads).
inline void schedule_attend(Halide::Func out, Halide::Func acc, Halide::Var d, Halide::Var i, Halide::Var h,
                            Halide::Var n, Halide::RDom rj, const AttendParams &prm) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var dO("dO"), di("di"), dv("dv"), io("io"), ii("ii"), iv("iv");
    const int td = std::max(1, prm.tile_d);
    out.split(d, dO, di, prm.threads_d * td, guard)
        .split(i, io, ii, prm.threads_i * prm.tile_i, guard)
        .split(ii, ii, iv, prm.tile_i, guard);
    if (td > 1) {
        out.split(di, di, dv, td, guard).reorder(dv, iv, dO, di, ii, h, io, n).unroll(dv);
    } else {
        out.reorder(iv, dO, di, ii, h, io, n);
    }
    out.gpu_blocks(io, h, n).gpu_threads(di, ii).unroll(iv);
    acc.compute_at(out, dO)
        .bound_storage(d, td)
        .bound_storage(i, prm.tile_i)
        .store_in(MemoryType::Register)
        .unroll(i);
    acc.update().reorder(d, i, rj.x).unroll(i);
    if (td > 1) {
        if (prm.vector_loads) {
            acc.vectorize(d);
            acc.update().vectorize(d);
        } else {
            acc.unroll(d);
            acc.update().unroll(d);
        }
    }
    if (prm.key_unroll > 1) acc.update().unroll(rj.x, prm.key_unroll, guard);
}

inline void schedule_head_mean(Halide::Func mean, Halide::Func total, Halide::Var j, Halide::Var i, Halide::Var n,
                               int threads) {
    using namespace Halide;
    Var jo("jo"), ji("ji");
    mean.split(j, jo, ji, threads, TailStrategy::GuardWithIf)
        .reorder(ji, jo, i, n)
        .gpu_blocks(i, n)
        .gpu_threads(ji);
    total.compute_at(mean, ji).bound_storage(j, 1).store_in(MemoryType::Register);
}

}  // namespace hmha_gen::schedules::gpu
