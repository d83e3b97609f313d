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

inline int or_default(int value, int derived) {
    return value > 0 ? value : derived;
}

}  // namespace hmha_gen::schedules::cpu
