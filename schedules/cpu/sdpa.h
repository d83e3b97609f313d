// CPU schedule for the fused SDPA. Parallel over batch, head and query block (nested:
// fusing them would blur bounds inference of the masks); inside it the online-softmax scan walks key blocks, and every
// per-block Func (transposed keys, scores, exponentials, block sums, P.V) lives
// in a key_block x query_block scratch tile computed at the scan's step, so
// memory is O(key_block x query_block) per thread whatever L and S are.
#pragma once

#include "Halide.h"
#include "generators/attention_scores.h"

namespace hmha_gen::schedules::cpu {

struct SdpaParams {
    int key_block, query_block, vector_width;
};

struct SdpaFuncs {
    Halide::Func out, state, block_max, block_sum, block_pv, p, score;
    AttentionScore sc;
    Halide::Func kc, vc;
};

inline void schedule_sdpa(SdpaFuncs f, const ScoreVars &v, Halide::Var kb, Halide::Var jj, Halide::RDom rj,
                          Halide::RDom rb, const SdpaParams &prm) {
    using namespace Halide;
    const int vw = prm.vector_width;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var io("io"), ii("ii"), di("di"), jo("jo"), ji("ji");

    f.out.split(v.i, io, ii, prm.query_block, guard)
        .reorder(v.d, ii, io, v.h, v.n)
        .parallel(v.n)
        .parallel(v.h)
        .parallel(io)
        .vectorize(v.d, vw, guard);

    f.state.compute_at(f.out, io).vectorize(v.d, vw, guard);
    f.state.update().reorder(v.d, v.i, rb, v.h, v.n).vectorize(v.d, vw, guard);

    // Per key block: scores as a small GEMM (keys vectorized, 4 queries unrolled).
    f.sc.kt.compute_at(f.state, rb).vectorize(v.j, vw, guard);
    f.sc.dot.compute_at(f.state, rb).vectorize(v.j, vw, guard);
    RVar rd(f.sc.rd.x);
    f.sc.dot.update()
        .split(v.j, jo, ji, 2 * vw, guard)
        .split(v.i, io, ii, 4, guard)
        .reorder(ji, ii, rd, jo, io)
        .vectorize(ji, vw, guard)
        .unroll(ji)
        .unroll(ii);
    f.score.compute_at(f.state, rb).vectorize(v.j, vw, guard);
    f.block_max.compute_at(f.state, rb);
    f.block_max.update().vectorize(v.i, vw, guard);
    f.p.compute_at(f.state, rb).vectorize(jj, vw, guard);
    f.block_sum.compute_at(f.state, rb);
    f.block_sum.update().vectorize(v.i, vw, guard);
    RVar rjv(rj.x);
    f.block_pv.compute_at(f.state, rb).vectorize(v.d, vw, guard);
    f.block_pv.update()
        .split(v.d, v.d, di, 2 * vw, guard)
        .split(v.i, io, ii, 4, guard)
        .reorder(di, ii, rjv, v.d, io)
        .vectorize(di, vw, guard)
        .unroll(di)
        .unroll(ii);
}

}  // namespace hmha_gen::schedules::cpu
