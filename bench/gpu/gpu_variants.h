// The GPU kernel variants of a build (generated gpu_variants.cpp): one per
// family, kernel and point of the schedule sweep in bench/gpu/CMakeLists.txt.
#pragma once

#include <vector>

struct GpuVariant {
    const char *family;  // "cuda", "opencl"
    const char *kernel;  // "linear", "sdpa", ...
    const char *params;  // "gpu_key_block=32 gpu_query_block=8"; "" = the untuned defaults
    void *fn;            // the kernel, with the signature of hmha_<kernel>_cpu
    // nullptr: our schedule with `params`; else the autoscheduler that scheduled
    // the kernel instead (a peer: timed and reported, never a winner), for
    // the shape `estimate` ("N,L,S,E,H"), the only one it runs at; fn is
    // nullptr where the autoscheduler failed, and `failed` says how.
    const char *autoscheduler = nullptr;
    const char *estimate = nullptr;
    const char *failed = nullptr;
};

const std::vector<GpuVariant> &gpu_variants();
