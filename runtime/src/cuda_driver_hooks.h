// Two things Halide 21's CUDA runtime does that our kernels need done
// differently, changed where it calls the driver, and a record of what the
// driver made of each kernel. Halide looks up every CUDA driver entry point
// through its library-symbol hook (halide_set_custom_get_library_symbol);
// install() chains a getter onto it that hands Halide a wrapper for three of
// them and the driver's own for the rest:
//
// - Shared memory over 48 KiB a block (cuLaunchKernel -> launch). A CUDA
//   kernel may use more dynamic shared memory than 48 KiB only after
//   cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
//   bytes) (up to the device's opt-in limit: 163 KiB on an A100, 227 KiB on an
//   H100); Halide 21 never sets it, so its launches of such kernels fail. A
//   launch asking for more than 48 KiB first raises that kernel's limit to
//   what it asks, then launches. HMHA_CUDA_SHARED_OPT_IN=0 turns this off.
//
// - The register cap of the PTX JIT (cuModuleLoadDataEx -> load_module).
//   Halide 21 loads each pipeline's PTX with CU_JIT_MAX_REGISTERS = 64 (or
//   $HL_CUDA_JIT_MAX_REGISTERS), so a register tile that needs more spills to
//   local memory: with the cap, ptxas spills 336-396 bytes a thread in the
//   tuned CUDA linear and 152 in the general sdpa kernel, which need 150-160
//   and 103 registers uncapped (bench/gpu/ptx_registers.py,
//   bench/results/ptx-registers-2026-11-28.md). Halide after 21 drops the cap
//   and lets the driver choose. The cap here: HMHA_CUDA_MAX_REGISTERS (0: no
//   cap, the driver chooses; 1-255: that cap), else the build's (a tuned
//   cuda.json's "jit_max_registers", HMHA_CUDA_JIT_MAX_REGISTERS), else
//   Halide's own options are left as they are.
//
// - What the driver made of each kernel (cuModuleGetFunction ->
//   get_function): the first time Halide looks up a kernel entry, its
//   registers a thread and local memory a thread (spills and stack arrays) as
//   the driver's JIT compiled it are recorded (compiled_kernels()), so that a
//   GPU run can see the cap at work: the kernel trace prints them
//   (HMHA_TRACE_KERNELS=1, kernels.cpp) and a [device] test checks them on CUDA.
//
// Used by the runtime (kernels.cpp, before its first CUDA call) and by the GPU
// sweep (bench/gpu/gpu_tune.cpp), so that both run the same kernels.
// Header-only and free of CUDA headers: the driver's types are declared here
// by their ABI.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "HalideRuntime.h"

#ifndef HMHA_CUDA_JIT_MAX_REGISTERS
#define HMHA_CUDA_JIT_MAX_REGISTERS -1  // the build's cap: none given, Halide's stands
#endif

namespace hmha::cuda_hooks {

using CUresult = int;
using CUfunction = void *;
using CUstream = void *;
using CUmodule = void *;
using LaunchFn = CUresult (*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                              CUstream, void **, void **);
using SetAttributeFn = CUresult (*)(CUfunction, int, int);
using LoadModuleFn = CUresult (*)(CUmodule *, const void *, unsigned, int *, void **);
using GetFunctionFn = CUresult (*)(CUfunction *, CUmodule, const char *);
using FuncGetAttributeFn = CUresult (*)(int *, int, CUfunction);

constexpr unsigned kDefaultLimitBytes = 48 * 1024;
constexpr int kMaxDynamicSharedSizeBytes = 8;  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
constexpr int kJitMaxRegisters = 0;            // CU_JIT_MAX_REGISTERS
constexpr int kKeepHalideCap = -1;             // max_registers: leave Halide's JIT options alone
constexpr int kMaxRegisters = 255;             // the most a thread can have
constexpr unsigned kMaxJitOptions = 16;        // more than Halide passes (1); beyond it, options pass unchanged
constexpr int kAttrLocalSizeBytes = 3;         // CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES
constexpr int kAttrNumRegs = 4;                // CU_FUNC_ATTRIBUTE_NUM_REGS
constexpr int kMaxRecordedKernels = 64;        // kernel entries recorded per process; later ones are not

// A kernel entry as the driver compiled it (-1: the driver did not say).
struct CompiledKernel {
    std::string entry;  // Halide's name for the entry, e.g. _kernel_out_s0_n_block_id_z
    int registers = -1;
    int local_bytes = -1;
};

struct State {
    std::atomic<LaunchFn> launch{nullptr};                   // the driver's cuLaunchKernel
    std::atomic<SetAttributeFn> set_attribute{nullptr};      // the driver's cuFuncSetAttribute
    std::atomic<LoadModuleFn> load_module{nullptr};          // the driver's cuModuleLoadDataEx
    std::atomic<halide_get_library_symbol_t> next{nullptr};  // the getter install() replaced
    std::atomic<bool> shared_opt_in{true};
    // The JIT's register cap: kKeepHalideCap, 0 (none) or 1-255.
    std::atomic<int> max_registers{kKeepHalideCap};
    std::atomic<GetFunctionFn> get_function{nullptr};        // the driver's cuModuleGetFunction
    std::atomic<FuncGetAttributeFn> get_attribute{nullptr};  // the driver's cuFuncGetAttribute
    // Kernel entries recorded (Halide looks each up before every launch: the
    // seen ones are found without a lock), and what the driver said of them.
    std::atomic<CUfunction> seen[kMaxRecordedKernels] = {};
    std::atomic<int> n_seen{0};
    std::mutex mutex;
    std::vector<CompiledKernel> compiled;  // guarded by mutex
};

inline State &state() {
    static State s;
    return s;
}

// HMHA_CUDA_MAX_REGISTERS's value: 0-255, or kKeepHalideCap where it is
// unset or empty; anything else sets `error` and gives kKeepHalideCap.
inline int parse_max_registers(const char *text, std::string *error) {
    if (text == nullptr || *text == '\0') return kKeepHalideCap;
    char *end = nullptr;
    errno = 0;
    const long n = std::strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || n < 0 || n > kMaxRegisters) {
        if (error) {
            *error = std::string(
                         "HMHA_CUDA_MAX_REGISTERS: expected 0 (no cap: the driver chooses) or a register "
                         "count from 1 to 255, got '") +
                     text + "'";
        }
        return kKeepHalideCap;
    }
    return (int)n;
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

// A module load through `s`: Halide's JIT options with its register cap
// replaced by s.max_registers (0: removed, so the driver chooses); the other
// options pass as they are.
inline CUresult load_module_with(State &s, CUmodule *module, const void *image, unsigned n, int *options,
                                 void **values) {
    const int cap = s.max_registers.load();
    LoadModuleFn load = s.load_module.load();
    if (cap == kKeepHalideCap || n >= kMaxJitOptions || (n > 0 && (options == nullptr || values == nullptr))) {
        return load(module, image, n, options, values);
    }
    int opts[kMaxJitOptions];
    void *vals[kMaxJitOptions];
    unsigned m = 0;
    for (unsigned i = 0; i < n; i++) {
        if (options[i] == kJitMaxRegisters) continue;
        opts[m] = options[i];
        vals[m++] = values[i];
    }
    if (cap > 0) {
        opts[m] = kJitMaxRegisters;
        vals[m++] = reinterpret_cast<void *>(static_cast<uintptr_t>(cap));
    }
    return load(module, image, m, m ? opts : nullptr, m ? vals : nullptr);
}

// A kernel lookup through `s`: the driver's, and the first time an entry is
// found, its registers and local memory, recorded.
inline CUresult get_function_with(State &s, CUfunction *f, CUmodule module, const char *name) {
    const CUresult r = s.get_function.load()(f, module, name);
    if (r != 0 || f == nullptr || *f == nullptr) return r;
    auto known = [&](int n) {
        for (int i = 0; i < n; i++) {
            if (s.seen[i].load(std::memory_order_acquire) == *f) return true;
        }
        return false;
    };
    if (known(s.n_seen.load(std::memory_order_acquire))) return r;
    std::lock_guard<std::mutex> lock(s.mutex);
    const int n = s.n_seen.load(std::memory_order_relaxed);
    if (known(n) || n >= kMaxRecordedKernels) return r;
    CompiledKernel k{name ? name : "", -1, -1};
    if (FuncGetAttributeFn get = s.get_attribute.load()) {
        int v = 0;
        if (get(&v, kAttrNumRegs, *f) == 0) k.registers = v;
        if (get(&v, kAttrLocalSizeBytes, *f) == 0) k.local_bytes = v;
    }
    s.compiled.push_back(k);
    s.seen[n].store(*f, std::memory_order_release);
    s.n_seen.store(n + 1, std::memory_order_release);
    return r;
}

// What Halide calls for cuLaunchKernel, cuModuleLoadDataEx and cuModuleGetFunction once install() ran.
inline CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                       unsigned shared_bytes, CUstream stream, void **params, void **extra) {
    return launch_with(state(), f, gx, gy, gz, bx, by, bz, shared_bytes, stream, params, extra);
}
inline CUresult load_module(CUmodule *module, const void *image, unsigned n, int *options, void **values) {
    return load_module_with(state(), module, image, n, options, values);
}
inline CUresult get_function(CUfunction *f, CUmodule module, const char *name) {
    return get_function_with(state(), f, module, name);
}

// The kernel entries recorded so far (get_function), in the order first launched.
inline std::vector<CompiledKernel> compiled_kernels() {
    State &s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    return s.compiled;
}

struct Wrappers {
    void *launch, *load_module, *get_function = nullptr;
};

// The chained lookup through `s`: s.next's symbol, but the wrapper for
// cuLaunchKernel where the opt-in is on and the driver has cuFuncSetAttribute,
// for cuModuleLoadDataEx where s sets a register cap, and for
// cuModuleGetFunction where the driver has cuFuncGetAttribute.
inline void *get_symbol_with(State &s, Wrappers w, void *lib, const char *name) {
    halide_get_library_symbol_t next = s.next.load();
    void *sym = next ? next(lib, name) : nullptr;
    if (!sym) return sym;
    if (std::strcmp(name, "cuLaunchKernel") == 0 && s.shared_opt_in.load()) {
        if (void *set = next(lib, "cuFuncSetAttribute")) {
            s.set_attribute.store(reinterpret_cast<SetAttributeFn>(set));
            s.launch.store(reinterpret_cast<LaunchFn>(sym));
            return w.launch;
        }
    }
    if (std::strcmp(name, "cuModuleLoadDataEx") == 0 && s.max_registers.load() != kKeepHalideCap) {
        s.load_module.store(reinterpret_cast<LoadModuleFn>(sym));
        return w.load_module;
    }
    if (std::strcmp(name, "cuModuleGetFunction") == 0 && w.get_function) {
        if (void *get = next(lib, "cuFuncGetAttribute")) {
            s.get_attribute.store(reinterpret_cast<FuncGetAttributeFn>(get));
            s.get_function.store(reinterpret_cast<GetFunctionFn>(sym));
            return w.get_function;
        }
    }
    return sym;
}

// The getter install() chains onto Halide's.
inline void *get_symbol(void *lib, const char *name) {
    return get_symbol_with(state(),
                           {reinterpret_cast<void *>(&launch), reinterpret_cast<void *>(&load_module),
                            reinterpret_cast<void *>(&get_function)},
                           lib, name);
}

// The cap the driver's JIT compiles under: the hook's (0: none), else
// Halide 21's own, $HL_CUDA_JIT_MAX_REGISTERS or 64.
inline int jit_max_registers() {
    const int cap = state().max_registers.load();
    if (cap != kKeepHalideCap) return cap;
    const char *hl = std::getenv("HL_CUDA_JIT_MAX_REGISTERS");
    return hl ? std::atoi(hl) : 64;
}

// The register cap install() applies: HMHA_CUDA_MAX_REGISTERS, else the build's.
inline int configured_max_registers() {
    std::string error;
    const int env = parse_max_registers(std::getenv("HMHA_CUDA_MAX_REGISTERS"), &error);
    if (!error.empty()) std::fprintf(stderr, "hmha: ignoring %s\n", error.c_str());
    return env != kKeepHalideCap ? env : HMHA_CUDA_JIT_MAX_REGISTERS;
}

// Chains get_symbol onto Halide's symbol getter, once per process, where the
// opt-in or the register cap has something to do; false where neither has
// (Halide's lookups are left alone, and no kernel is recorded).
inline bool install() {
    static const bool installed = [] {
        const char *env = std::getenv("HMHA_CUDA_SHARED_OPT_IN");
        State &s = state();
        s.shared_opt_in.store(!(env && std::strcmp(env, "0") == 0));
        s.max_registers.store(configured_max_registers());
        if (!s.shared_opt_in.load() && s.max_registers.load() == kKeepHalideCap) return false;
        s.next.store(halide_set_custom_get_library_symbol(&get_symbol));
        return true;
    }();
    return installed;
}

}  // namespace hmha::cuda_hooks
