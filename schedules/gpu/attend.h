// GPU schedules for weights @ V and the mean over heads. API-neutral.
#pragma once

#include "Halide.h"

namespace hmha_gen::schedules::gpu {

struct AttendParams {
    int threads_d, threads_i;
};

// A block per (query tile, head, batch); thread (d, i) accumulates its output
// in a register over keys. Threads along d read V coalesced.
inline void schedule_attend(Halide::Func out, Halide::Func acc, Halide::Var d, Halide::Var i, Halide::Var h,
                            Halide::Var n, Halide::RDom rj, const AttendParams &prm) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var dO("dO"), di("di"), io("io"), ii("ii");
    out.split(d, dO, di, prm.threads_d, guard)
        .split(i, io, ii, prm.threads_i, guard)
        .reorder(dO, di, ii, h, io, n)
        .gpu_blocks(io, h, n)
        .gpu_threads(di, ii);
    acc.compute_at(out, dO).bound_storage(d, 1).bound_storage(i, 1).store_in(MemoryType::Register);
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
