// CPU schedules for weights @ V and the mean over heads.
#pragma once

#include "Halide.h"

namespace hmha_gen::schedules::cpu {

struct AttendParams {
    int query_block, vector_width;
};

// One task per (query block, head, batch); register block of 2 vectors of d x 4 queries.
inline void schedule_attend(Halide::Func out, Halide::Func acc, Halide::Var d, Halide::Var i, Halide::Var h,
                            Halide::Var n, Halide::RDom rj, const AttendParams &prm) {
    using namespace Halide;
    const int vw = prm.vector_width;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var io("io"), ii("ii"), dO("dO"), di("di");
    out.split(i, io, ii, prm.query_block, guard)
        .reorder(d, ii, io, h, n)
        .parallel(n)
        .parallel(h)
        .parallel(io)
        .vectorize(d, vw, guard);
    acc.compute_at(out, io).vectorize(d, vw, guard);
    acc.update()
        .split(d, dO, di, 2 * vw, guard)
        .split(i, io, ii, 4, guard)
        .reorder(di, ii, rj.x, dO, io)
        .vectorize(di, vw, guard)
        .unroll(di)
        .unroll(ii);
}

inline void schedule_head_mean(Halide::Func mean, Halide::Func total, Halide::Var j, Halide::Var i, Halide::Var n,
                               int vector_width) {
    using namespace Halide;
    Var t("t");
    mean.fuse(i, n, t).parallel(t).vectorize(j, vector_width, TailStrategy::GuardWithIf);
    total.compute_at(mean, t).vectorize(j, vector_width, TailStrategy::GuardWithIf);
    total.update().vectorize(j, vector_width, TailStrategy::GuardWithIf);
}

}  // namespace hmha_gen::schedules::cpu
