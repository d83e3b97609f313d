// GPU schedule for the fused SDPA (flash-style). A block per (query block,
// head, batch) of threads_d x query_block threads; thread (d, i) updates the
// (max, sum, accumulator) state of its elements, kept in shared memory. The scan over key blocks runs at block level; at each step the
// block's keys are staged in shared memory (loaded with threads along d, so
// coalesced), the threads compute the key_block x query_block scores, the
// per-query block max / exp-sum, the exponentials and P.V into shared memory,
// and then every thread rescales its state. Memory is O(key_block x D) shared
// per block: no L x S' buffer exists. API-neutral: compiles for CUDA and OpenCL.
#pragma once

#include "Halide.h"
#include "generators/attention_scores.h"

namespace hmha_gen::schedules::gpu {

struct SdpaParams {
    int key_block, query_block, threads_d;
    // The key block in shared memory key-fastest, rows padded to key_block + 1:
    // the score loop's threads (consecutive keys) then read consecutive banks.
    // Stored d-fastest (false), consecutive keys are head_dim words apart, one
    // bank for the whole warp at head_dim 64.
    bool keys_transposed_shared;
};

struct SdpaFuncs {
    Halide::Func out, state, block_max, block_sum, block_pv, p, score;
    AttentionScore sc;
    Halide::Func kc, vc;
};

inline void schedule_sdpa(SdpaFuncs f, const ScoreVars &v, Halide::Var kb, Halide::Var jj, Halide::RDom rj,
                          Halide::RDom rb, const SdpaParams &prm) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    const int td = prm.threads_d;
    Var io("io"), ii("ii"), dO("dO"), di("di"), jo("jo"), ji("ji");

    f.out.split(v.i, io, ii, prm.query_block, guard)
        .split(v.d, dO, di, td, guard)
        .reorder(dO, di, ii, v.h, io, v.n)
        .gpu_blocks(io, v.h, v.n)
        .gpu_threads(di, ii);

    f.state.compute_at(f.out, v.h).store_in(MemoryType::GPUShared);
    f.state.split(v.d, dO, di, td, guard).reorder(dO, di, v.i).gpu_threads(di, v.i);
    f.state.update().split(v.d, dO, di, td, guard).reorder(dO, di, v.i, rb).gpu_threads(di, v.i);

    // Per key block, all at the scan step (block level), each with its own threads.
    f.kc.compute_at(f.state, rb).store_in(MemoryType::GPUShared);
    if (prm.keys_transposed_shared) f.kc.reorder_storage(v.j, v.d, v.h, v.n).bound_storage(v.j, prm.key_block + 1);
    // Every producer uses the same threads_d x query_block thread shape.
    f.kc.split(v.d, dO, di, td, guard)
        .split(v.j, jo, ji, prm.query_block, guard)
        .reorder(dO, di, jo, ji)
        .gpu_threads(di, ji);
    f.score.compute_at(f.state, rb).store_in(MemoryType::GPUShared);
    f.score.split(v.j, jo, ji, td, guard).reorder(jo, ji, v.i).gpu_threads(ji, v.i);
    f.block_max.compute_at(f.state, rb).store_in(MemoryType::GPUShared).gpu_threads(v.i);
    f.block_max.update().gpu_threads(v.i);
    f.p.compute_at(f.state, rb).store_in(MemoryType::GPUShared);
    f.p.split(jj, jo, ji, td, guard).reorder(jo, ji, v.i).gpu_threads(ji, v.i);
    f.block_sum.compute_at(f.state, rb).store_in(MemoryType::GPUShared).gpu_threads(v.i);
    f.block_sum.update().gpu_threads(v.i);
    f.block_pv.compute_at(f.state, rb).store_in(MemoryType::GPUShared);
    f.block_pv.split(v.d, dO, di, td, guard).reorder(dO, di, v.i).gpu_threads(di, v.i);
    f.block_pv.update().split(v.d, dO, di, td, guard).reorder(dO, di, rj.x, v.i).gpu_threads(di, v.i);
}

}  // namespace hmha_gen::schedules::gpu
