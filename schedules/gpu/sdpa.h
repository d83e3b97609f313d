// GPU schedules for the fused SDPA (flash-style). API-neutral: they compile
// for CUDA and OpenCL. No L x S' buffer exists in any of them.
//
// schedule_sdpa (the default): a block per (query block, head, batch) of
// threads_d x query_block threads; thread (d, i) updates the (max, sum,
// accumulator) state of its elements, kept in shared memory. The scan over key
// blocks runs at block level; at each step the block's keys are staged in
// shared memory (loaded with threads along d, so coalesced), the threads
// compute the key_block x query_block scores, the per-query block max /
// exp-sum and the exponentials into shared memory, and then every thread
// rescales its state with its P.V sum (in shared memory, or computed in a
// register right there: pv_registers, 1.9x on an H100). Shared memory is
// O((key_block + query_block) x D) per block.
//
// schedule_sdpa_tiled (tile_j, tile_i or tile_d above 1; the tuned CUDA
// schedule): the same structure with register tiles in the score and P.V
// loops, the block max / exp-sum split over threads, and every stage on one
// thread shape: on an H100 3x the untuned default and 1.55x the best
// untiled variant (4.8-5.7 TFLOP/s; bench/results/h100-2026-11-26.md).
//
// schedule_sdpa_query_rows (thread_per_query): one thread per query; measured
// slower on an H100 (bench/results/h100-2026-11-26.md), faster on PoCL.
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
    // One thread per query (schedule_sdpa_query_rows): threads_d is unused,
    // and `unroll` keys (scores) or head dims (P.V) per step are kept in registers.
    bool thread_per_query;
    int unroll;
    // thread_per_query: each thread's (max, sum, accumulator) state in its own
    // (local) memory, bounded by max_head_dim, and no shared memory at all: keys
    // and values are read from global memory, the same address across a warp.
    bool thread_state;
    int max_head_dim;
    // Threads over (d, i) (the default schedule): each score's dot product
    // unrolled by dot_unroll over d, and each state element's P.V sum kept in a
    // register (pv_registers) instead of a shared (d, i) block read and written
    // at every key.
    int dot_unroll;
    bool pv_registers;
    // Register tiles (schedule_sdpa_tiled, when any is above 1): each thread
    // computes tile_j keys x tile_i queries of the scores and updates tile_d
    // head dims x tile_i queries of the state, so every value it loads feeds
    // several multiply-adds (tile_j + tile_i loads for tile_j * tile_i FMAs).
    int tile_j, tile_i, tile_d;
    // Tiled: each block max and exp-sum reduced by key_block / tile_j threads
    // per query, then combined (instead of one thread per query).
    bool split_block_reductions;
    // Tiled: each thread reduces the block max and exp-sum of its own queries
    // itself, in registers, where it uses them (the max in the exponentials'
    // stage and again in the state update, the sum there), reading the
    // block's scores and exponentials from shared memory. Redundant work (every
    // thread of a query repeats its reductions), but no block-level stage for
    // them: in the tuned variant's PTX, 5 barriers per key block instead of 13.
    bool thread_block_reductions;
    // Tiled: each key block's values staged in shared memory beside its keys,
    // so that the P.V loop reads shared memory instead of global memory
    // through L1 (the H100 profile of 2026-11-27: L1/TEX 94% busy, 38% of
    // the stalls waiting on L1TEX loads). (The block's queries staged the
    // same way, once per block, from the clamped `qc`, gave wrong results on
    // PoCL with Halide 21 at S = 65 and L <= 3; not kept.)
    bool stage_values;
    // A second copy of the kernel for calls with this head_dim (0: none),
    // whole query blocks and no masks, where every loop over head dims and
    // queries is whole: the general kernel guards each head dim and query of
    // a thread's tiles (GuardWithIf; GPU thread loops are not partitioned),
    // and loads the three masks for every score. In the tuned CUDA variant's
    // PTX at head_dim 64: 1153 instructions and 60 branches against 2265 and
    // 192, the P.V loop's 4 FMAs a key no longer each behind a branch.
    int head_dim;
};

struct SdpaFuncs {
    Halide::Func out, state, block_max, block_sum, block_pv, p, score;
    AttentionScore sc;
    Halide::Func kc, vc;
};

// A block per (query block, head, batch) of query_block threads, thread i
// owning query i: each key block's keys and values are staged in shared
// memory (loaded along d, coalesced), then every thread computes its own row
// of scores (`unroll` keys at a time in registers, its query read from q), its
// block max, exponentials and exp-sum, and
// updates its state, `unroll` head dims at a time with their P.V sums in
// registers. The keys and values a warp reads are the same for all its
// threads (broadcasts), the per-query data in shared memory is query-fastest
// (one bank per thread): no bank conflicts and no thread idle between barriers.
// (Staging the block's queries in shared memory too, through a wrapper of q,
// gave wrong results on PoCL on 2026-11-26 and was taken out.)
inline void schedule_sdpa_query_rows(SdpaFuncs f, const ScoreVars &v, Halide::RDom rj, Halide::RDom rb,
                                     Halide::Var jj, Halide::Var kb, const SdpaParams &prm) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    const int qb = prm.query_block, u = prm.unroll;
    Var io("io"), ii("ii"), dO("dO"), di("di"), jo("jo"), ji("ji");

    f.out.split(v.i, io, ii, qb, guard).reorder(v.d, ii, v.h, io, v.n).gpu_blocks(io, v.h, v.n).gpu_threads(ii);
    if (prm.thread_state) {
        f.state.compute_at(f.out, ii)
            .store_in(MemoryType::Stack)
            .bound_storage(v.d, prm.max_head_dim)
            .bound_storage(v.i, 1);
        f.state.update().split(v.d, dO, di, u, guard).reorder(di, dO, rb).unroll(di);
        f.score.compute_at(f.state, rb).bound_storage(v.j, prm.key_block).bound_storage(v.i, 1);
        // Every loop over the key block unrolled, so that the scores and
        // exponentials can stay in registers (constant indices).
        f.score.split(v.j, jo, ji, u, guard).reorder(ji, jo).unroll(ji).unroll(jo);
        f.sc.dot.compute_at(f.score, jo).store_in(MemoryType::Register).bound_storage(v.j, u).unroll(v.j);
        f.sc.dot.update().reorder(v.j, f.sc.rd).unroll(v.j);
        f.block_max.compute_at(f.state, rb);
        f.block_max.update().unroll(rj);
        f.p.compute_at(f.state, rb).bound_storage(jj, prm.key_block).unroll(jj);
        f.block_sum.compute_at(f.state, rb);
        f.block_sum.update().unroll(rj);
        f.block_pv.compute_at(f.state, dO).store_in(MemoryType::Register).bound_storage(v.d, u).unroll(v.d);
        f.block_pv.update().reorder(v.d, rj).unroll(v.d).unroll(rj);
        return;
    }
    f.state.compute_at(f.out, v.h).store_in(MemoryType::GPUShared).reorder_storage(v.i, v.d, v.h, v.n);
    f.state.reorder(v.d, v.i).gpu_threads(v.i);
    f.state.update().split(v.d, dO, di, u, guard).reorder(di, dO, v.i, rb).gpu_threads(v.i).unroll(di);

    f.kc.compute_at(f.state, rb)
        .store_in(MemoryType::GPUShared)
        .reorder_storage(v.j, v.d, v.h, v.n)
        .bound_storage(v.j, prm.key_block + 1);
    f.kc.split(v.d, dO, di, qb, guard).reorder(dO, v.j, di).gpu_threads(di);
    f.vc.compute_at(f.state, rb).store_in(MemoryType::GPUShared);
    f.vc.split(v.d, dO, di, qb, guard).reorder(dO, v.j, di).gpu_threads(di);

    f.score.compute_at(f.state, rb).store_in(MemoryType::GPUShared).reorder_storage(v.i, v.j, v.h, v.n);
    f.score.split(v.j, jo, ji, u, guard).reorder(ji, jo, v.i).gpu_threads(v.i).unroll(ji);
    f.sc.dot.compute_at(f.score, jo).store_in(MemoryType::Register).bound_storage(v.j, u).unroll(v.j);
    f.sc.dot.update().reorder(v.j, f.sc.rd).unroll(v.j);
    f.block_max.compute_at(f.state, rb).store_in(MemoryType::GPUShared).gpu_threads(v.i);
    f.block_max.update().gpu_threads(v.i);
    f.p.compute_at(f.state, rb).store_in(MemoryType::GPUShared).reorder_storage(v.i, jj, kb, v.h, v.n);
    f.p.reorder(jj, v.i).gpu_threads(v.i);
    f.block_sum.compute_at(f.state, rb).store_in(MemoryType::GPUShared).gpu_threads(v.i);
    f.block_sum.update().gpu_threads(v.i);
    f.block_pv.compute_at(f.state, dO).store_in(MemoryType::Register).bound_storage(v.d, u).unroll(v.d);
    f.block_pv.update().reorder(v.d, rj).unroll(v.d);
}

// The key block's keys (kc) or values (vc), staged in shared memory at each
// scan step of the (d, i) schedules (schedule_sdpa, schedule_sdpa_tiled) by
// threads_d x threads_j threads, loaded along d (coalesced); stored
// key-fastest with rows padded to key_block + 1 where `transposed` (the keys,
// where keys_transposed_shared).
inline void stage_key_block(SdpaFuncs f, const ScoreVars &v, Halide::RDom rb, const SdpaParams &prm, int threads_j,
                            Halide::Func staged, bool transposed) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var dO("dO"), di("di"), jo("jo"), ji("ji");
    staged.compute_at(f.state, rb).store_in(MemoryType::GPUShared);
    if (transposed) {
        staged.reorder_storage(v.j, v.d, v.h, v.n).bound_storage(v.j, prm.key_block + 1);
    }
    staged.split(v.d, dO, di, prm.threads_d, guard)
        .split(v.j, jo, ji, threads_j, guard)
        .reorder(dO, di, jo, ji)
        .gpu_threads(di, ji);
}

// The default schedule's structure (a block per query block and head; the
// state in shared memory; the key block staged transposed in shared memory)
// with register tiles: threads_d x (query_block / tile_i) threads. Thread
// (dt, it) updates head dims dt * tile_d + [0, tile_d) (and threads_d *
// tile_d further on, for larger heads) of queries it * tile_i + [0, tile_i),
// its P.V sums in registers; for the scores the same threads cover the
// key_block x query_block tile in tile_j x tile_i pieces, their dot products
// in registers. The exponentials are stored query-fastest, so that a
// thread's tile_i of them are adjacent.
inline void schedule_sdpa_tiled(SdpaFuncs f, const ScoreVars &v, Halide::Var kb, Halide::Var jj, Halide::RDom rj,
                                Halide::RDom rb, const SdpaParams &prm) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    const int td = prm.threads_d, ti = prm.tile_i, tj = prm.tile_j, tdd = prm.tile_d;
    const int threads_i = std::max(1, prm.query_block / ti);
    Var io("io"), ii("ii"), dO("dO"), di("di"), dv("dv"), it("it"), iv("iv"), jo("jo"), ji("ji"), jv("jv");

    // Every stage runs on the same threads_d x threads_i threads (a stage
    // with more would enlarge the block, and its extra warps would only
    // wait at the barriers: half the stalls on an H100 when `out` had
    // threads_d x query_block).
    f.out.split(v.i, io, ii, prm.query_block, guard)
        .split(ii, it, iv, ti, guard)
        .split(v.d, dO, di, td, guard)
        .reorder(iv, dO, di, it, v.h, io, v.n)
        .gpu_blocks(io, v.h, v.n)
        .gpu_threads(di, it);

    f.state.compute_at(f.out, v.h).store_in(MemoryType::GPUShared);
    f.state.split(v.d, dO, di, td, guard).split(v.i, it, iv, ti, guard).reorder(iv, dO, di, it).gpu_threads(di, it);
    f.state.update()
        .split(v.d, dO, di, td * tdd, guard)
        .split(di, di, dv, tdd, guard)
        .split(v.i, it, iv, ti, guard)
        .reorder(dv, iv, dO, di, it, rb)
        .gpu_threads(di, it)
        .unroll(dv)
        .unroll(iv);
    f.block_pv.compute_at(f.state, dO)
        .store_in(MemoryType::Register)
        .bound_storage(v.d, tdd)
        .bound_storage(kb, 1)
        .bound_storage(v.i, ti)
        .bound_storage(v.h, 1)
        .bound_storage(v.n, 1)
        .unroll(v.d)
        .unroll(v.i);
    f.block_pv.update().reorder(v.d, v.i, rj.x).unroll(v.d).unroll(v.i);
    if (prm.dot_unroll > 1) f.block_pv.update().unroll(rj.x, prm.dot_unroll, guard);

    stage_key_block(f, v, rb, prm, threads_i, f.kc, prm.keys_transposed_shared);
    if (prm.stage_values) stage_key_block(f, v, rb, prm, threads_i, f.vc, false);

    f.score.compute_at(f.state, rb).store_in(MemoryType::GPUShared);
    f.score.split(v.j, ji, jv, tj, guard)
        .split(v.i, it, iv, ti, guard)
        .reorder(jv, iv, ji, it)
        .gpu_threads(ji, it)
        .unroll(jv)
        .unroll(iv);
    f.sc.dot.compute_at(f.score, ji)
        .store_in(MemoryType::Register)
        .bound_extent(v.j, tj)
        .bound_extent(v.i, ti)
        .unroll(v.j)
        .unroll(v.i);
    f.sc.dot.update().reorder(v.j, v.i, f.sc.rd.x).unroll(v.j).unroll(v.i);
    if (prm.dot_unroll > 1) f.sc.dot.update().unroll(f.sc.rd.x, prm.dot_unroll, guard);

    f.p.compute_at(f.state, rb).store_in(MemoryType::GPUShared).reorder_storage(v.i, jj, kb, v.h, v.n);
    f.p.split(jj, ji, jv, tj, guard).split(v.i, it, iv, ti, guard).reorder(jv, iv, ji, it).gpu_threads(ji, it);
    if (prm.thread_block_reductions) {
        // The exponentials' threads get a copy of the block max (clone_in,
        // per query), the state update's threads the original (per thread)
        // and the exp-sum (per head-dim step, beside the P.V sums). Two
        // placements that came out wrong on PoCL with Halide 21 in blocks of
        // fewer queries than query_block (L = 1, the last block of L = 17):
        // the exp-sum once per thread (at `di`), and the copy per thread with
        // the exponentials' query loop unrolled.
        Func max_for_p = f.block_max.clone_in(f.p);
        max_for_p.compute_at(f.p, iv).store_in(MemoryType::Register);
        f.block_max.compute_at(f.state, di).store_in(MemoryType::Register).unroll(v.i);
        f.block_max.update().reorder(v.i, rj.x).unroll(v.i);
        f.block_sum.compute_at(f.state, dO).store_in(MemoryType::Register).unroll(v.i);
        f.block_sum.update().reorder(v.i, rj.x).unroll(v.i);
        return;
    }
    // The block max and exp-sum of each query: (key_block / tile_j) threads
    // per query each reduce tile_j keys, then one reduces their results
    // (rfactor), a chain of tile_j + key_block / tile_j steps, not key_block.
    for (Func r : {f.block_max, f.block_sum}) {
        r.compute_at(f.state, rb).store_in(MemoryType::GPUShared).gpu_threads(v.i);
        if (!prm.split_block_reductions) {
            r.update().gpu_threads(v.i);
            continue;
        }
        RVar rjo("rjo"), rji("rji");
        Var u("u");
        Func part = r.update().split(rj.x, rjo, rji, tj, guard).rfactor(rjo, u);
        r.update().gpu_threads(v.i);
        part.compute_at(f.state, rb).store_in(MemoryType::GPUShared);
        part.split(v.i, it, iv, ti, guard).reorder(iv, u, it).gpu_threads(u, it);
        part.update().split(v.i, it, iv, ti, guard).reorder(rji, iv, u, it).gpu_threads(u, it);
    }
}

inline void schedule_sdpa_loops(SdpaFuncs f, const ScoreVars &v, Halide::Var kb, Halide::Var jj, Halide::RDom rj,
                                Halide::RDom rb, const SdpaParams &prm) {
    if (prm.thread_per_query) {
        schedule_sdpa_query_rows(f, v, rj, rb, jj, kb, prm);
        return;
    }
    if (prm.tile_j > 1 || prm.tile_i > 1 || prm.tile_d > 1) {
        schedule_sdpa_tiled(f, v, kb, jj, rj, rb, prm);
        return;
    }
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

    // Per key block, all at the scan step (block level), each with its own
    // threads; every producer uses the same threads_d x query_block shape.
    stage_key_block(f, v, rb, prm, prm.query_block, f.kc, prm.keys_transposed_shared);
    f.score.compute_at(f.state, rb).store_in(MemoryType::GPUShared);
    f.score.split(v.j, jo, ji, td, guard).reorder(jo, ji, v.i).gpu_threads(ji, v.i);
    f.block_max.compute_at(f.state, rb).store_in(MemoryType::GPUShared).gpu_threads(v.i);
    f.block_max.update().gpu_threads(v.i);
    f.p.compute_at(f.state, rb).store_in(MemoryType::GPUShared);
    f.p.split(jj, jo, ji, td, guard).reorder(jo, ji, v.i).gpu_threads(ji, v.i);
    f.block_sum.compute_at(f.state, rb).store_in(MemoryType::GPUShared).gpu_threads(v.i);
    f.block_sum.update().gpu_threads(v.i);
    if (prm.dot_unroll > 1) {
        RVar rdo("rdo"), rdi("rdi");
        f.sc.dot.update().split(f.sc.rd.x, rdo, rdi, prm.dot_unroll, guard).unroll(rdi);
    }
    if (prm.pv_registers) {
        f.block_pv.compute_at(f.state, dO).store_in(MemoryType::Register);
        f.block_pv.update().unroll(rj.x, 4);
        return;
    }
    f.block_pv.compute_at(f.state, rb).store_in(MemoryType::GPUShared);
    f.block_pv.split(v.d, dO, di, td, guard).reorder(dO, di, v.i).gpu_threads(di, v.i);
    f.block_pv.update().split(v.d, dO, di, td, guard).reorder(dO, di, rj.x, v.i).gpu_threads(di, v.i);
}

// gpu_two_pass (generators/sdpa.cpp, define_two_pass): one copy of the two
// passes, at a fixed head_dim or at any.
struct TwoPassFuncs {
    int fixed_head_dim = 0;  // 0: any head_dim
    Halide::Func q{"q_in"}, k_max{"k_max"}, k_sum{"k_sum"}, v{"v_in"};
    AttentionScore sc_max, sc_sum;
    Halide::RDom rk;  // the keys, of both passes
    Halide::Func row_max{"row_max"}, e{"e"}, acc{"acc"};
};

// gpu_two_pass: a block of query_block threads per (query block, head,
// batch), one query a thread, which first loops over the keys for its row
// max and then again for its sums, `unroll` keys a step. No shared memory
// and no barrier: the keys and values a warp reads are the same for all its
// threads (one broadcast load serves the warp), and a thread's query, row max
// and sums stay in its registers from the first key to the last. In the
// fixed copy (head_dim = gpu_head_dim, use_fixed) every loop over head dims is
// unrolled and q, k and v are loaded as float4: in ptxas for sm_90, 168-174
// registers (1-4 keys a step) and no local memory, a key 65 + 138 FFMA and
// 16 + 32 LDG.128 in the two passes (bench/results/ptx-two-pass-sdpa-2026-11-28.md).
// The other copy keeps its sums in local memory, max_head_dim + 1 a
// thread, for other head dims.
inline void schedule_sdpa_two_pass(Halide::Func out, const ScoreVars &v, const std::vector<TwoPassFuncs> &chains,
                                   int query_block, int unroll, int max_head_dim, Halide::Expr use_fixed,
                                   Halide::Expr causal) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var io("io"), ii("ii");
    out.split(v.i, io, ii, query_block, guard).reorder(v.d, ii, v.h, io, v.n).gpu_blocks(io, v.h, v.n).gpu_threads(ii);
    for (const TwoPassFuncs &t : chains) {
        const int hd = t.fixed_head_dim;
        Func row_max = t.row_max, acc = t.acc;
        const RVar key = t.rk.x;
        // Each pass: its scores, the Func that reduces them over the keys, and the keys it reads.
        const struct {
            const AttentionScore &sc;
            Func consumer, keys;
        } passes[] = {{t.sc_max, row_max, t.k_max}, {t.sc_sum, acc, t.k_sum}};
        row_max.compute_at(out, ii).store_in(MemoryType::Register);
        acc.compute_at(out, ii);
        if (hd == 0) {
            acc.store_in(MemoryType::Stack).bound_storage(v.d, max_head_dim + 1);
            acc.update().reorder(v.d, t.rk);
            for (const auto &pass : passes) {
                Func(pass.sc.dot).compute_at(pass.consumer, key).store_in(MemoryType::Register);
            }
            Func(t.e).compute_at(acc, key).store_in(MemoryType::Register);
            continue;
        }
        // Every loop over head dims and over a step's keys unrolled, so that
        // every index into the registers is a constant.
        acc.store_in(MemoryType::Register).bound_extent(v.d, hd + 1).unroll(v.d);
        acc.update().reorder(v.d, t.rk).unroll(v.d).unroll(key, unroll, guard);
        row_max.update().unroll(key, unroll, guard);
        Func q = t.q;
        q.compute_at(out, ii).store_in(MemoryType::Register).bound_extent(v.d, hd).vectorize(v.d, 4).unroll(v.d);
        // A step's rows of keys or values, in registers, loaded as float4.
        auto stage_rows = [&](Func rows, Func consumer, RVar at) {
            rows.compute_at(consumer, at)
                .store_in(MemoryType::Register)
                .bound_extent(v.d, hd)
                .bound_extent(v.j, unroll)
                .vectorize(v.d, 4)
                .unroll(v.d)
                .unroll(v.j);
        };
        for (const auto &pass : passes) {
            Func dot = pass.sc.dot;
            dot.compute_at(pass.consumer, key).store_in(MemoryType::Register).bound_extent(v.j, unroll).unroll(v.j);
            dot.update().reorder(v.j, pass.sc.rd.x).unroll(v.j).unroll(pass.sc.rd.x);
            stage_rows(pass.keys, pass.consumer, key);
        }
        Func(t.e).compute_at(acc, key).store_in(MemoryType::Register).bound_extent(v.j, unroll).unroll(v.j);
        stage_rows(t.v, acc, key);
    }
    if (chains[0].fixed_head_dim > 0) {  // the fixed copy, where there is one, is the first
        // After the schedule so far (specialize copies it): the fixed copy's
        // branches, with out's loop over head dims unrolled too (out is as
        // wide as q's head dims); not causal first, where no loop over keys
        // ends early (the causal branch's per-query loop ends take 254
        // registers to its 174). In the last branch use_fixed is known false,
        // so the fixed copy drops out of it.
        out.specialize(use_fixed && !causal).unroll(v.d);
        out.specialize(use_fixed).unroll(v.d);
    }
}

// head_dim: q's (the dot products' extent); has_masks: the kernel's input.
inline void schedule_sdpa(SdpaFuncs f, const ScoreVars &v, Halide::Var kb, Halide::Var jj, Halide::RDom rj,
                          Halide::RDom rb, const SdpaParams &prm, Halide::Expr head_dim, Halide::Expr has_masks) {
    schedule_sdpa_loops(f, v, kb, jj, rj, rb, prm);
    if (prm.head_dim > 0) {
        // After the schedule: specialize() copies the schedule so far.
        Halide::OutputImageParam o = f.out.output_buffer();
        f.out.specialize(o.dim(0).extent() == prm.head_dim && head_dim == prm.head_dim &&
                         o.dim(2).extent() % prm.query_block == 0 && !has_masks);
    }
}

}  // namespace hmha_gen::schedules::gpu
