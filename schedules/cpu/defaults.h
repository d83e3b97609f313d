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
