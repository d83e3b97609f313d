// Target-derived defaults for the CPU schedules' GeneratorParams. A param left at
// 0 means "derive from the target": the natural vector width (16 floats with
// AVX-512, 8 with AVX2, 4 with NEON) and register-tile widths that fit the
// target's vector register file (32 registers with AVX-512 or NEON, 16 with AVX2).
#pragma once

#include <algorithm>

#include "Halide.h"

namespace hmha_gen::schedules::cpu {

inline int natural_vector_width(const Halide::Target &t) {
    return t.natural_vector_size<float>();
}

inline bool has_32_vector_registers(const Halide::Target &t) {
    return t.has_feature(Halide::Target::AVX512) || t.arch == Halide::Target::ARM;
}

// Queries per register tile of the weights @ V products (2 vectors of head_dim
// x this many queries): the 2 x rows accumulators, the 2 vectors of V and a
// broadcast weight must fit the register file. 8 rows with 32 registers
// (attend measured 1.2x-1.7x faster than with 4 on AVX-512: each row of V
// loaded serves twice the queries); 4 with 16 (AVX2), where 8 would spill.
inline int register_tile_rows(const Halide::Target &t) {
    return has_32_vector_registers(t) ? 8 : 4;
}

inline int or_default(int value, int derived) {
    return value > 0 ? value : derived;
}

inline int vector_registers(const Halide::Target &t) {
    return has_32_vector_registers(t) ? 32 : 16;
}

// Register tiles that the target's register file holds. Tuned params apply to
// every variant of a dispatch build (CMakeLists.txt: one params list for the
// AVX-512, AVX2 and SSE4.1 variants of a kernel), so a tile tuned where there
// are 32 vector registers reaches the 16-register variants too, where it
// spills: measured with hmha_tune on the AVX2 target (2026-11-27, Zen 4 VM),
// sdpa's 8-query score tiles (host.json's) 1.15-1.3x slower than 4 or 6 at
// (1, 2048, 2048, 512, 8), linear's 64-float output tiles (8 AVX2 vectors)
// 1.3x slower than 24 (3 AVX2 vectors, then AVX2's default). A tile that does
// not fit takes the target's default instead; one that fits is kept as tuned.
//
// A Q.K^T tile of `rows` queries (schedules/cpu/scores.h) holds 2 x rows
// accumulators, 2 vectors of K^T and a broadcast query: the most rows the
// register file holds.
inline int max_score_tile_rows(const Halide::Target &t) {
    return (vector_registers(t) - 3) / 2;
}

inline int fitting_score_tile_rows(int rows, const Halide::Target &t) {
    return rows <= max_score_tile_rows(t) ? rows : register_tile_rows(t);
}

// The online sdpa's tiles (schedules/cpu/sdpa.h): queries per Q.K^T tile,
// per P.V tile, and per query block (0 rows: register_tile_rows). As asked
// where they fit; on 16 vector registers, where the score tile asked for does
// not fit (the tuned file's 8 rows reach the AVX2 variant of a dispatch
// build), 6-row tiles for both products (12 accumulators, 2 vectors, a
// broadcast: 15 registers) and the query block rounded down to whole tiles.
// hmha_tune on Zen 3 (AVX2, 2026-11-27, key blocks of 512, ms, 4-row tiles in
// 32-query blocks / 6-row tiles in 30-query blocks, two alternated rounds): (1, 4096, 4096, 512, 8)
// 326-332 / 292-316, (1, 2048, 1024, 1024, 16) 72.5-75.1 / 70.2-71.5,
// (4, 512, 512, 512, 8) 19.6-19.7 / 18.6-18.7; in 48-query blocks 263-267
// against 276-281 at the first shape in another phase of the VM. 6-row tiles
// in the 32-query block (a 2-row tail) were 3-15% slower than 4-row ones, and
// in sdpa_short (128-key blocks, 128 queries) 6-row tiles in 126-query blocks
// 0-5% slower than 4-row ones (its tuned 4 rows fit; 0 rows stay 4).
struct SdpaTiles {
    int score_rows, pv_rows, query_block;
};

inline SdpaTiles sdpa_tiles(int score_rows, int pv_rows, int query_block, const Halide::Target &t) {
    if (!has_32_vector_registers(t) && score_rows > 0 && fitting_score_tile_rows(score_rows, t) != score_rows) {
        const int rows = max_score_tile_rows(t);
        return {rows, rows, std::max(rows, query_block / rows * rows)};
    }
    const int fallback = register_tile_rows(t);
    return {fitting_score_tile_rows(or_default(score_rows, fallback), t),
            fitting_score_tile_rows(or_default(pv_rows, fallback), t), query_block};
}

// linear's tiles (schedules/cpu/linear.h), target-derived: with 32 vector
// registers 4 vectors of output features x 4 rows (16 accumulators) in tasks
// of 32 rows; with 16, 2 vectors x 6 rows (12 accumulators, 2 vectors of W, a
// broadcast: OpenBLAS's Haswell micro-kernel shape) in tasks of 96 rows, with
// W packed (linear.h). A task reads all of W's columns it owns once per
// tile_r rows, so taller tasks read W (4 MiB at E = 1024) fewer times: where
// the forward's other data has pushed W out of L3, that is the projection's
// time. Measured in the forward on Zen 3 (AVX2, 2026-11-27, HMHA_TRACE_KERNELS,
// three alternated rounds, the projections' ms, 48-row / 96-row tasks): cross
// (1, 2048, 1024, 1024, 16) 111-157 / 89-99, (1, 2048, 2048, 1024, 16)
// 129-153 / 120-138, (1, 4096, 2048, 512, 8) cross 49-59 / 43-48,
// (4, 512, 512, 512, 8) 33-34 / 31-33, per-head (1, 2048, 2048, 1024, 16)
// 232-284 / 215-247; (32, 128, 128, 256, 4), (1, 16, 16, 1024, 16) and
// (8, 1, 512, 1024, 16) within the VM's drift. Alone (hmha_tune, warm caches,
// Zen 4's AVX2 target) the gap is smaller: 2048 x 1024 -> 1024 25.3-25.7 /
// 22.9-24.1 ms, 2048 x 512 -> 512 5.7-6.0 / 5.4-5.7. Calls with fewer rows
// than a task (the per-head path's 64-row output blocks, decode steps) take
// the few-row tasks of linear.h; before those existed 96-row tasks lost
// there (the guarded path).
struct LinearTile {
    int tile_o, unroll_r, tile_r;
};

inline LinearTile default_linear_tile(int vw, const Halide::Target &t) {
    return has_32_vector_registers(t) ? LinearTile{4 * vw, 4, 32} : LinearTile{2 * vw, 6, 96};
}

// linear's micro-kernel: (tile_o / vw) x unroll_r accumulators, tile_o / vw
// vectors of W and a broadcast x. {tile_o, unroll_r} as given (0: derived) if
// they fit, else the target's defaults; tile_r as given, or derived.
inline LinearTile fitting_linear_tile(int tile_o, int unroll_r, int tile_r, int vw, const Halide::Target &t) {
    const LinearTile d = default_linear_tile(vw, t);
    const LinearTile want{or_default(tile_o, d.tile_o), or_default(unroll_r, d.unroll_r), or_default(tile_r, d.tile_r)};
    const int vectors = (want.tile_o + vw - 1) / vw;
    if (vectors * (want.unroll_r + 1) + 1 <= vector_registers(t)) return want;
    return {d.tile_o, d.unroll_r, want.tile_r};
}

// A copy of the input `input` made for `consumer` alone (its wrapper; for
// every consumer with `consumer` undefined), computed
// at `at` and vectorized along its first, contiguous dimension: its storage is
// dense over the region `at` needs, whatever the input's strides (linear's
// packed W, the whole-row kernels' per-head V). Returned for further
// scheduling.
inline Halide::Func contiguous_copy(Halide::Func input, Halide::Func consumer, Halide::LoopLevel at, int vw) {
    Halide::Func copy = consumer.defined() ? input.in(consumer) : input.in();
    copy.compute_at(at).vectorize(copy.args()[0], vw, Halide::TailStrategy::GuardWithIf);
    return copy;
}

// The loop nest the CPU schedules of sdpa, masked_softmax, softmax_attend and
// attend share: f's queries i in blocks of query_block (Vars "io", "ii"; the
// tail guarded), `inner` innermost, parallel over batch, head and query block
// (nested, not fused: fusing would blur bounds inference of the masks).
inline Halide::Func parallel_query_blocks(Halide::Func f, Halide::Var inner, Halide::Var i, Halide::Var h,
                                          Halide::Var n, int query_block) {
    Halide::Var io("io"), ii("ii");
    return f.split(i, io, ii, query_block, Halide::TailStrategy::GuardWithIf)
        .reorder(inner, ii, io, h, n)
        .parallel(n)
        .parallel(h)
        .parallel(io);
}

}  // namespace hmha_gen::schedules::cpu
