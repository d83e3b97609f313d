// The GPU kernel variants of a build (generated gpu_variants.cpp): one per
// family, kernel and point of the schedule sweep in bench/gpu/CMakeLists.txt.
#pragma once

#include <vector>

struct GpuVariant {
    const char *family;  // "cuda", "opencl"
    const char *kernel;  // "linear", "sdpa", ...
    const char *params;  // "gpu_key_block=32 gpu_query_block=8"; "" = the untuned defaults
    void *fn;            // the kernel, with the signature of hmha_<kernel>_cpu
};

const std::vector<GpuVariant> &gpu_variants();
