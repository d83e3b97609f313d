// Target-derived defaults for the CPU schedules' GeneratorParams. A param left at
// 0 means "derive from the target": the natural vector width (16 floats with
// AVX-512, 8 with AVX2, 4 with NEON) and register-tile widths that fit the
// target's vector register file (32 registers with AVX-512 or NEON, 16 with AVX2).
#pragma once

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
// accumulators, 2 vectors of K^T and a broadcast query.
inline int fitting_score_tile_rows(int rows, const Halide::Target &t) {
    return 2 * rows + 3 <= vector_registers(t) ? rows : register_tile_rows(t);
}

// linear's tiles (schedules/cpu/linear.h), target-derived: with 32 vector
// registers 4 vectors of output features x 4 rows (16 accumulators) in tasks
// of 32 rows; with 16, 2 vectors x 6 rows (12 accumulators, 2 vectors of W, a
// broadcast: OpenBLAS's Haswell micro-kernel shape) in tasks of 48 rows, with
// W packed (linear.h). Measured on AVX2 with packed W (hmha_tune, 2026-11-27,
// ms per call, two passes), 48-row tasks / 96-row tasks / 3 vectors x 4 rows in
// 32-row tasks: 2048 x 1024 -> 1024 25.3-25.7 / 22.9-24.1 / 26.3-26.9;
// 2048 x 512 -> 512 5.7-6.0 / 5.4-5.7 / 6.0-6.2; 512 x 512 1.56-1.59 / 1.64 /
// 1.66-1.68; 512 x 256 -> 256 0.381-0.407 / 0.375-0.424 / 0.387-0.443. Not 96:
// the per-head path's output projection runs blocks of 64 rows
// (runtime/src/mha.cpp attend_per_head), and a call with fewer rows than a task
// takes the guarded, unrolled-nothing path (measured: (1, 4096, 2048, 512, 8)
// cross 1.1-1.55x slower end to end with 96-row tasks).
struct LinearTile {
    int tile_o, unroll_r, tile_r;
};

inline LinearTile default_linear_tile(int vw, const Halide::Target &t) {
    return has_32_vector_registers(t) ? LinearTile{4 * vw, 4, 32} : LinearTile{2 * vw, 6, 48};
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
