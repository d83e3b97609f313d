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
};

// A block per (query tile, head, batch); thread (d, i) accumulates its
// tile_i outputs in registers over keys. Threads along d read V coalesced.
inline void schedule_attend(Halide::Func out, Halide::Func acc, Halide::Var d, Halide::Var i, Halide::Var h,
                            Halide::Var n, Halide::RDom rj, const AttendParams &prm) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var dO("dO"), di("di"), io("io"), ii("ii"), iv("iv");
    out.split(d, dO, di, prm.threads_d, guard)
        .split(i, io, ii, prm.threads_i * prm.tile_i, guard)
        .split(ii, ii, iv, prm.tile_i, guard)
        .reorder(iv, dO, di, ii, h, io, n)
        .gpu_blocks(io, h, n)
        .gpu_threads(di, ii)
        .unroll(iv);
    acc.compute_at(out, dO)
        .bound_storage(d, 1)
        .bound_storage(i, prm.tile_i)
        .store_in(MemoryType::Register)
        .unroll(i);
    acc.update().reorder(d, i, rj.x).unroll(i);
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
