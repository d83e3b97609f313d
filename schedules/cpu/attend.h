// CPU schedules for weights @ V and the mean over heads.
#pragma once

#include "Halide.h"
#include "schedules/cpu/defaults.h"

namespace hmha_gen::schedules::cpu {

struct AttendParams {
    int query_block, vector_width;
    int tile_rows = 4;  // queries per register tile (register_tile_rows); attend only
    int key_chunk = 0;  // keys per chunk (0: each tile runs over every key); tile_attend with f a block Func,
                        // and head_mean (its head sum in registers; tuned 32: at (32, 128, 128, 256, 4)
                        // 0.085 ms in the 2026-11-26-v3 report against 0.118 in -v2, without it)
};

// Register tiles of weights @ V: each tile of 2 vectors of f's fd x
// tile_rows of its fi accumulates in registers (acc(d, i, ...) is computed
// per tile). f's loops outside the tile (it) are left to the caller.
//
// With key_chunk, f must be a block Func computed whole (f's d and i are
// acc's): acc is computed once for f's block, a chunk of keys at a time for
// every tile, each tile's partial sum over the chunk in registers (rfactor),
// so that chunk of V is read from L1 by every tile instead of the head's
// whole V streaming past each tile.
inline void tile_attend(Halide::Func f, Halide::VarOrRVar fd, Halide::VarOrRVar fi, Halide::Func acc, Halide::Var d,
                        Halide::Var i, Halide::RDom rj, const AttendParams &prm) {
    using namespace Halide;
    const int vw = prm.vector_width;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var d_o("d_o"), di("di"), it("it"), iti("iti");
    auto tiles = [&](Stage s, VarOrRVar sd, VarOrRVar si) -> Stage & {
        return s.split(sd, d_o, di, 2 * vw, guard)
            .split(si, it, iti, prm.tile_rows, guard)
            .reorder(di, iti, d_o, it)
            .vectorize(di, vw)
            .unroll(di)
            .unroll(iti);
    };
    // A tile's accumulators: 2 vectors of d x tile_rows of i, on the stack
    // (promoted to registers). d reads V directly, so its vectors are guarded
    // (head_dim need not be a multiple).
    auto registers = [&](Func a, LoopLevel at) {
        a.compute_at(at)
            .bound_storage(d, 2 * vw)
            .bound_storage(i, prm.tile_rows)
            .store_in(MemoryType::Stack)
            .vectorize(d, vw, guard)
            .unroll(d)
            .unroll(i);
    };
    if (prm.key_chunk > 0) {
        f.vectorize(fd, vw, guard);
        RVar rjo("rjo"), rji("rji");
        Var u("u");
        Func part = acc.update().split(rj.x, rjo, rji, prm.key_chunk, guard).rfactor(rjo, u);
        acc.compute_at(f, Var::outermost()).vectorize(d, vw, guard);
        tiles(acc.update(), d, i).reorder(di, iti, d_o, it, rjo);
        registers(part, LoopLevel(acc, d_o));
        part.update().reorder(d, i, rji).vectorize(d, vw, guard).unroll(d).unroll(i);
        return;
    }
    tiles(f, fd, fi);
    registers(acc, LoopLevel(f, d_o));
    acc.update().reorder(d, i, rj.x).vectorize(d, vw, guard).unroll(d).unroll(i);
}

// Parallel over batch, head and query block, then attend's register tiles.
inline void schedule_attend(Halide::Func out, Halide::Func acc, Halide::Var d, Halide::Var i, Halide::Var h,
                            Halide::Var n, Halide::RDom rj, const AttendParams &prm) {
    using namespace Halide;
    parallel_query_blocks(out, d, i, h, n, prm.query_block);
    tile_attend(out, d, Var("ii"), acc, d, i, rj, prm);
}

// Parallel over batch and blocks of query rows (a task per row was too fine:
// a row is S' floats per head); each row's sum over heads accumulates in an
// L1-resident row (total), one contiguous head row at a time.
inline void schedule_head_mean(Halide::Func mean, Halide::Func total, Halide::Var j, Halide::Var i, Halide::Var n,
                               Halide::RVar rh, const AttendParams &prm) {
    using namespace Halide;
    const TailStrategy guard = TailStrategy::GuardWithIf;
    Var io("io"), ii("ii"), jo("jo"), ji("ji");
    mean.split(i, io, ii, prm.query_block, guard)
        .reorder(j, ii, io, n)
        .parallel(n)
        .parallel(io);
    if (prm.key_chunk > 0) {
        // The head sum of key_chunk keys at a time, in registers, the heads
        // outermost: each head adds its key_chunk / vector_width vectors into
        // as many independent accumulators (the heads inside each vector made
        // one dependent chain of adds a vector).
        mean.split(j, jo, ji, prm.key_chunk, guard).vectorize(ji, prm.vector_width, guard);
        total.compute_at(mean, jo).vectorize(j, prm.vector_width, guard);
        total.update().vectorize(j, prm.vector_width, guard).unroll(j).reorder(j, rh);
        return;
    }
    mean.vectorize(j, prm.vector_width, guard);
    total.compute_at(mean, ii).vectorize(j, prm.vector_width, guard);
    total.update().vectorize(j, prm.vector_width, guard);
}

}  // namespace hmha_gen::schedules::cpu
