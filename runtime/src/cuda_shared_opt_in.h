// CUDA kernels with more than 48 KiB of shared memory a block. A CUDA kernel
// may use more dynamic shared memory than 48 KiB only after
// cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes)
// (up to the device's opt-in limit: 163 KiB on an A100, 227 KiB on an H100);
// Halide 21's CUDA runtime never sets it, so its launches of such kernels fail.
// Halide looks up every CUDA driver entry point through its library-symbol
// hook (halide_set_custom_get_library_symbol); install() chains a getter onto
// it that hands Halide `launch` for cuLaunchKernel: a launch asking for more
// than 48 KiB first raises that kernel's limit to what it asks, then launches;
// every other launch and every other entry point are the driver's own.
//
// Used by the runtime (kernels.cpp, before its first CUDA call) and by the GPU
// sweep (bench/gpu/gpu_tune.cpp), so that both run the same kernels. Set
// HMHA_CUDA_SHARED_OPT_IN=0 to leave Halide's lookups alone. Header-only and
// free of CUDA headers: the driver's types are declared here by their ABI.
#pragma once

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "HalideRuntime.h"

namespace hmha::cuda_shared_opt_in {

using CUresult = int;
using CUfunction = void *;
using CUstream = void *;
using LaunchFn = CUresult (*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              CUstream, void **, void **);
using SetAttributeFn = CUresult (*)(CUfunction, int, int);

constexpr unsigned kDefaultLimitBytes = 48 * 1024;
constexpr int kMaxDynamicSharedSizeBytes = 8;  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

struct State {
    std::atomic<LaunchFn> launch{nullptr};               // the driver's cuLaunchKernel
    std::atomic<SetAttributeFn> set_attribute{nullptr};  // the driver's cuFuncSetAttribute
    std::atomic<halide_get_library_symbol_t> next{nullptr};  // the getter install() replaced
};

inline State &state() {
    static State s;
    return s;
}

// A launch through `s`: the kernel's limit is raised to this launch's bytes
// (a later, smaller launch of it needs nothing more).
inline CUresult launch_with(State &s, CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                            unsigned bz, unsigned shared_bytes, CUstream stream, void **params, void **extra) {
    if (shared_bytes > kDefaultLimitBytes) {
        if (SetAttributeFn set = s.set_attribute.load()) {
            CUresult r = set(f, kMaxDynamicSharedSizeBytes, (int)shared_bytes);
            if (r != 0) return r;  // over the device's opt-in limit: Halide reports it as the launch's error
        }
    }
    return s.launch.load()(f, gx, gy, gz, bx, by, bz, shared_bytes, stream, params, extra);
}

// What Halide calls for cuLaunchKernel once install() ran.
inline CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                       unsigned shared_bytes, CUstream stream, void **params, void **extra) {
    return launch_with(state(), f, gx, gy, gz, bx, by, bz, shared_bytes, stream, params, extra);
}

// The chained lookup through `s`: s.next's symbol, but `wrapper` for
// cuLaunchKernel when the driver has both it and cuFuncSetAttribute.
inline void *get_symbol_with(State &s, void *wrapper, void *lib, const char *name) {
    halide_get_library_symbol_t next = s.next.load();
    void *sym = next ? next(lib, name) : nullptr;
    if (sym && std::strcmp(name, "cuLaunchKernel") == 0) {
        if (void *set = next(lib, "cuFuncSetAttribute")) {
            s.set_attribute.store(reinterpret_cast<SetAttributeFn>(set));
            s.launch.store(reinterpret_cast<LaunchFn>(sym));
            return wrapper;
        }
    }
    return sym;
}

// The getter install() chains onto Halide's.
inline void *get_symbol(void *lib, const char *name) {
    return get_symbol_with(state(), reinterpret_cast<void *>(&launch), lib, name);
}

// Chains get_symbol onto Halide's symbol getter, once per process; false
// where HMHA_CUDA_SHARED_OPT_IN=0 left it alone.
inline bool install() {
    static const bool installed = [] {
        const char *env = std::getenv("HMHA_CUDA_SHARED_OPT_IN");
        if (env && std::strcmp(env, "0") == 0) return false;
        state().next.store(halide_set_custom_get_library_symbol(&get_symbol));
        return true;
    }();
    return installed;
}

}  // namespace hmha::cuda_shared_opt_in
