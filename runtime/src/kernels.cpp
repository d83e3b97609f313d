#include "kernels.h"

#include "sdpa_classes.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <sstream>
#include <string>

#include "HalideBuffer.h"
#include "HalideRuntime.h"
#if HMHA_HAVE_OPENCL
#include "HalideRuntimeOpenCL.h"
#include "hmha_attend_opencl.h"
#include "hmha_head_mean_opencl.h"
#include "hmha_linear_opencl.h"
#include "hmha_linear_few_rows_opencl.h"
#include "hmha_linear_vector_x_opencl.h"
#include "hmha_masked_softmax_opencl.h"
#include "hmha_sdpa_opencl.h"
#endif
#if HMHA_HAVE_CUDA
#include "HalideRuntimeCuda.h"
#include "cuda_driver_hooks.h"
#include "hmha_attend_cuda.h"
#include "hmha_head_mean_cuda.h"
#include "hmha_linear_cuda.h"
#include "hmha_linear_few_rows_cuda.h"
#include "hmha_linear_vector_x_cuda.h"
#include "hmha_masked_softmax_cuda.h"
#include "hmha_sdpa_cuda.h"
#endif

namespace {
// Halide reports errors through halide_error; keep the text for the exception
// instead of letting it go to stderr.
thread_local std::string last_halide_error;
}  // namespace

extern "C" void halide_error(void *, const char *msg) {
    last_halide_error = msg ? msg : "";
    while (!last_halide_error.empty() && last_halide_error.back() == '\n') last_halide_error.pop_back();
}

namespace hmha {

namespace {

// Allocates one float on the device: the cheapest call that makes the device
// API load its driver, pick a device and create a context.
std::string probe_device(const halide_device_interface_t *iface) {
    Halide::Runtime::Buffer<float> probe(1);
    last_halide_error.clear();
    int status = probe.device_malloc(iface);
    if (status == 0) return "";
    std::string why = last_halide_error.empty() ? "Halide status " + std::to_string(status) : last_halide_error;
    last_halide_error.clear();
    return why;
}

// The GPU families this build has; null for one it did not generate.
const KernelSet *opencl_kernels() {
#if HMHA_HAVE_OPENCL
    // An OpenCL buffer (a cl_mem, a crop a sub-buffer) starts at least 128
    // bytes aligned: linear_vector_x needs no address check there.
    static const KernelSet opencl{.linear = hmha_linear_opencl,
                                  .sdpa = hmha_sdpa_opencl,
                                  .masked_softmax = hmha_masked_softmax_opencl,
                                  .attend = hmha_attend_opencl,
                                  .head_mean = hmha_head_mean_opencl,
                                  .device = halide_opencl_device_interface(),
                                  .native_handle = halide_opencl_get_cl_mem,
                                  .linear_vector_x = hmha_linear_vector_x_opencl,
                                  .linear_vector_x_k = HMHA_LINEAR_VECTOR_X_K_OPENCL,
                                  .linear_few_rows = hmha_linear_few_rows_opencl};
    return &opencl;
#else
    return nullptr;
#endif
}

#if HMHA_HAVE_CUDA
// Before the process's first CUDA call: launches of kernels with more than
// 48 KiB of shared memory a block opt in to it, and the PTX JIT gets the
// configured register cap (cuda_driver_hooks.h).
[[maybe_unused]] const bool cuda_hooks_installed = cuda_hooks::install();
#endif

const KernelSet *cuda_kernels() {
#if HMHA_HAVE_CUDA
    static const KernelSet cuda{.linear = hmha_linear_cuda,
                                .sdpa = hmha_sdpa_cuda,
                                .masked_softmax = hmha_masked_softmax_cuda,
                                .attend = hmha_attend_cuda,
                                .head_mean = hmha_head_mean_cuda,
                                .device = halide_cuda_device_interface(),
                                .native_handle = halide_cuda_get_device_ptr,
                                .linear_vector_x = hmha_linear_vector_x_cuda,
                                .linear_vector_x_k = HMHA_LINEAR_VECTOR_X_K_CUDA,
                                .device_field_is_address = true,
                                .linear_few_rows = hmha_linear_few_rows_cuda};
    return &cuda;
#else
    return nullptr;
#endif
}

// A host <-> device copy's size as the int32 extent of a Halide byte buffer.
int transfer_bytes(const Tensor &t, const char *what) {
    if (t.nbytes() > (size_t)std::numeric_limits<int32_t>::max()) {
        throw Error(std::string("Tensor::") + what + ": " + std::to_string(t.nbytes()) +
                    " bytes overflow int32 indexing");
    }
    return (int)t.nbytes();
}

}  // namespace

const KernelSet &kernels_for(Device device) {
    static const KernelSet cpu{.linear = hmha_linear_cpu,
                               .sdpa = hmha_sdpa_cpu,
                               .masked_softmax = hmha_masked_softmax_cpu,
                               .attend = hmha_attend_cpu,
                               .head_mean = hmha_head_mean_cpu,
                               .sdpa_short = hmha_sdpa_short_cpu,
                               .sdpa_key_block = HMHA_SDPA_KEY_BLOCK,
                               .sdpa_short_key_block = HMHA_SDPA_SHORT_KEY_BLOCK,
                               .sdpa_rows = hmha_sdpa_rows_cpu,
                               .sdpa_rows_copy_v = hmha_sdpa_rows_copy_v_cpu,
                               .sdpa_copy_v = hmha_sdpa_copy_v_cpu,
                               .sdpa_short_copy_v = hmha_sdpa_short_copy_v_cpu,
                               .sdpa_kt = hmha_sdpa_kt_cpu,
                               .sdpa_kt_short = hmha_sdpa_kt_short_cpu,
                               .sdpa_kt_key_block = HMHA_SDPA_KT_KEY_BLOCK,
                               .sdpa_kt_short_key_block = HMHA_SDPA_KT_SHORT_KEY_BLOCK,
                               .softmax_attend = hmha_softmax_attend_cpu,
                               .softmax_attend_mean = hmha_softmax_attend_mean_cpu,
                               .softmax_attend_mean_copy_v = hmha_softmax_attend_mean_copy_v_cpu,
                               .softmax_attend_mean_long = hmha_softmax_attend_mean_long_cpu,
                               .softmax_attend_mean_long_copy_v = hmha_softmax_attend_mean_long_copy_v_cpu,
                               .softmax_attend_copy_v = hmha_softmax_attend_copy_v_cpu,
                               .softmax_attend_long = hmha_softmax_attend_long_cpu,
                               .softmax_attend_long_copy_v = hmha_softmax_attend_long_copy_v_cpu};
    if (device == Device::CPU) return cpu;
    const KernelSet *built = device == Device::CUDA ? cuda_kernels() : opencl_kernels();
    if (built == nullptr) {
        throw Error(std::string("device: '") + to_string(device) + "' is not available: this build has no " +
                    to_string(device) + " kernels");
    }
    const KernelSet &ks = *built;
    static std::mutex mutex;
    static std::string cuda_error, opencl_error;
    static bool cuda_probed = false, opencl_probed = false;
    std::lock_guard<std::mutex> lock(mutex);
    bool &probed = device == Device::CUDA ? cuda_probed : opencl_probed;
    std::string &error = device == Device::CUDA ? cuda_error : opencl_error;
    if (!probed) {
        error = probe_device(ks.device);
        if (error.empty()) halide_reuse_device_allocations(nullptr, true);
        probed = true;
    }
    if (!error.empty()) {
        throw Error(std::string("device: '") + to_string(device) + "' is not available: " + error);
    }
    return ks;
}

// Below this many outputs (features x rows) a GPU projection takes
// linear_few_rows: the tuned tile (128 features x 32 rows a block) then fills
// fewer than about 128 blocks, under one an SM of an H100, and each thread's
// reduction runs at memory latency. H100, 2026-11-27 (results/
// h100-2026-11-27b.md, run 4), ms, few_rows / tuned with vector_x: 512
// features x 16 rows 0.040 / 0.224, x 128 0.041 / 0.058, x 512 0.044 / 0.060,
// x 1024 0.076 / 0.061; 1024 x 128 0.072 / 0.109, 1024 x 512 0.140 / 0.109.
namespace {
constexpr int64_t kGpuFewRowsOutputs = int64_t(1) << 19;
// The threshold in force: a test hook can move it (detail::set_gpu_few_rows_outputs).
std::atomic<int64_t> gpu_few_rows_outputs{kGpuFewRowsOutputs};
}  // namespace

namespace detail {
// Sets the threshold (0: never linear_few_rows) and returns the previous one;
// tests/test_linear_classes.cpp declares it.
int64_t set_gpu_few_rows_outputs(int64_t outputs) {
    return gpu_few_rows_outputs.exchange(outputs);
}
}  // namespace detail

decltype(&hmha_linear_cpu) KernelSet::linear_for(const halide_buffer_t *x, const halide_buffer_t *y) const {
    if (linear_few_rows && (int64_t)y->dim[0].extent * y->dim[1].extent < gpu_few_rows_outputs.load()) {
        return linear_few_rows;
    }
    if (!linear_vector_x || x->dimensions != 2 || x->dim[0].min != 0 || x->dim[0].extent % linear_vector_x_k != 0 ||
        x->dim[1].stride % 4 != 0) {
        return linear;
    }
    // The row at x's min must start 16-byte aligned on the host (the
    // pipeline checks) and on the device (vector loads would fault).
    const auto aligned = [](uint64_t address) { return address % 16 == 0; };
    if (x->host && !aligned((uint64_t)(uintptr_t)x->host)) return linear;
    if (device_field_is_address && x->device && !aligned(x->device)) return linear;
    return linear_vector_x;
}

decltype(&hmha_sdpa_cpu) KernelSet::sdpa_for(int64_t keys, int64_t queries, int64_t value_row_stride) const {
    return choose_sdpa(*this, keys, queries, value_row_stride);
}

decltype(&hmha_softmax_attend_mean_cpu) KernelSet::softmax_attend_mean_for(int64_t keys, int64_t queries,
                                                                           int64_t value_row_stride) const {
    if (softmax_attend_mean_long != nullptr && keys >= kSoftmaxAttendMeanLongKeys) {
        return plain_or_copy_v(softmax_attend_mean_long, softmax_attend_mean_long_copy_v, keys, queries,
                               value_row_stride);
    }
    return plain_or_copy_v(softmax_attend_mean, softmax_attend_mean_copy_v, keys, queries, value_row_stride);
}

decltype(&hmha_softmax_attend_cpu) KernelSet::softmax_attend_for(int64_t keys, int64_t queries,
                                                                int64_t value_row_stride) const {
    if (softmax_attend_long != nullptr && keys >= kSoftmaxAttendLongKeys) {
        return plain_or_copy_v(softmax_attend_long, softmax_attend_long_copy_v, keys, queries, value_row_stride);
    }
    return plain_or_copy_v(softmax_attend, softmax_attend_copy_v, keys, queries, value_row_stride);
}

KernelSet::KtClass KernelSet::kt_for(int64_t keys) const {
    if (use_short_key_block(keys, sdpa_kt_key_block, sdpa_kt_short_key_block)) {
        return {sdpa_kt_short, padded_keys(keys, sdpa_kt_short_key_block)};
    }
    return {sdpa_kt, padded_keys(keys, sdpa_kt_key_block)};
}

int64_t KernelSet::kt_padded_keys(int64_t keys) const {
    return std::max(padded_keys(keys, sdpa_kt_key_block), padded_keys(keys, sdpa_kt_short_key_block));
}

namespace detail {
namespace {
// HMHA_TRACE_KERNELS=1 (or set_kernel_trace): every call that check_status
// sees, timed on the host and, on a GPU, followed by a device sync, so that
// what a forward spends outside its kernels (launches, copies, allocations,
// the runtime's own work between them) shows beside what it waits for.
// A diagnostic: the syncs take away the overlap of launches with kernels.
using Clock = std::chrono::steady_clock;
struct TraceEntry {
    int64_t calls = 0;
    double host_ms = 0, wait_ms = 0;
};
struct Trace {
    std::mutex mutex;
    // Read without the mutex first: an untraced forward takes no lock.
    std::atomic<bool> on{[] {
        const char *env = std::getenv("HMHA_TRACE_KERNELS");
        return env && std::strcmp(env, "0") != 0 && *env;
    }()};
    bool report_at_exit = on;
    // From the environment the first forward is left out (it loads the GPU
    // kernels, or JIT-compiles them on OpenCL).
    int skip = on ? 1 : 0;
    int64_t forwards = 0;
    int active = 0;  // forwards in progress: calls outside any are not traced
    const halide_device_interface_t *device = nullptr;
    Clock::time_point last;
    std::map<std::string, TraceEntry> entries;
    ~Trace() {
        if (report_at_exit && forwards > 0) std::fputs(report().c_str(), stderr);
    }
    static double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
    // The time since the last event, on the host, and (GPU) in the device sync.
    void record(const std::string &name) {
        const auto t1 = Clock::now();
        if (device) halide_device_sync_global(nullptr, device);
        const auto t2 = Clock::now();
        TraceEntry &e = entries[name];
        e.calls++;
        e.host_ms += ms(t1 - last);
        e.wait_ms += ms(t2 - t1);
        last = t2;
    }
    std::string report() {
        std::ostringstream os;
        char line[200];
        std::snprintf(line, sizeof line,
                      "hmha kernel trace: %lld forwards; per forward: calls, ms on the host before each "
                      "returned, ms waiting for the device after\n%-22s %8s %10s %10s\n",
                      (long long)forwards, "call", "calls", "host ms", "wait ms");
        os << line;
        const double f = (double)std::max<int64_t>(forwards, 1);
        for (const auto &[name, e] : entries) {
            std::snprintf(line, sizeof line, "%-22s %8.1f %10.4f %10.4f\n", name.c_str(), e.calls / f, e.host_ms / f,
                          e.wait_ms / f);
            os << line;
        }
#if HMHA_HAVE_CUDA
        // The CUDA kernel entries launched so far, as the driver's JIT compiled
        // them (cuda_driver_hooks.h), under the register cap in force.
        const std::vector<cuda_hooks::CompiledKernel> compiled = cuda_hooks::compiled_kernels();
        if (!compiled.empty()) {
            const int cap = cuda_hooks::jit_max_registers();
            os << "CUDA kernel entries as the driver compiled them, register cap "
               << (cap == 0 ? std::string("none") : std::to_string(cap)) << ":\n";
            for (const cuda_hooks::CompiledKernel &k : compiled) {
                std::snprintf(line, sizeof line, "  %-44s %4d registers %6d bytes local\n", k.entry.c_str(),
                              k.registers, k.local_bytes);
                os << line;
            }
        }
#endif
        return os.str();
    }
};
Trace &trace() {
    static Trace t;
    return t;
}
}  // namespace

void set_kernel_trace(bool on) {
    Trace &t = trace();
    std::lock_guard<std::mutex> lock(t.mutex);
    t.on = on;
    t.skip = 0;
    t.forwards = 0;
    t.entries.clear();
}

std::string kernel_trace_report() {
    Trace &t = trace();
    std::lock_guard<std::mutex> lock(t.mutex);
    return t.report();
}

KernelTraceScope::KernelTraceScope(const halide_device_interface_t *device) : on(false) {
    Trace &t = trace();
    if (!t.on) return;
    std::lock_guard<std::mutex> lock(t.mutex);
    if (!t.on) return;
    if (t.skip > 0) {
        t.skip--;
        return;
    }
    on = true;
    if (device) halide_device_sync_global(nullptr, device);
    t.device = device;
    t.forwards++;
    t.active++;
    t.last = Clock::now();
}

KernelTraceScope::~KernelTraceScope() {
    if (!on) return;
    Trace &t = trace();
    std::lock_guard<std::mutex> lock(t.mutex);
    t.record("(rest of forward)");
    t.active--;
}
}  // namespace detail

void check_status(const char *kernel, int status) {
    if (detail::Trace &t = detail::trace(); t.on) {
        std::lock_guard<std::mutex> lock(t.mutex);
        if (t.active > 0) t.record(kernel);
    }
    if (status != 0) {
        std::string msg = "internal error: kernel " + std::string(kernel) + " failed (Halide status " +
                          std::to_string(status) + ")";
        if (!last_halide_error.empty()) msg += ": " + last_halide_error;
        last_halide_error.clear();
        throw Error(msg);
    }
}

void synchronize(Device device) {
    if (device == Device::CPU) return;
    check_status("synchronize", halide_device_sync_global(nullptr, kernels_for(device).device));
}

Tensor Tensor::to_host() const {
    if (device_ == Device::CPU) return *this;
    Tensor t = Tensor::uninitialized(shape_, dtype_);
    if (numel() == 0) return t;
    const int n = transfer_bytes(*this, "to_host");
    const KernelSet &ks = kernels_for(device_);
    Halide::Runtime::Buffer<uint8_t> b(t.bytes(), n);
    check_status("to_host", b.device_wrap_native(ks.device, device_handle_));
    b.set_device_dirty();
    check_status("to_host", b.copy_to_host());
    check_status("to_host", b.device_detach_native());
    return t;
}

Tensor Tensor::to_device(Device device) const {
    if (device == device_) return *this;
    if (device == Device::CPU) return to_host();
    if (device_ != Device::CPU) return to_host().to_device(device);
    const KernelSet &ks = kernels_for(device);
    if (numel() == 0) return wrap_device(device, 0, shape_, dtype_);
    const int n = transfer_bytes(*this, "to_device");
    auto owner = std::make_shared<Halide::Runtime::Buffer<uint8_t>>(const_cast<uint8_t *>(bytes()), n);
    owner->set_host_dirty();
    check_status("to_device", owner->copy_to_device(ks.device));
    Tensor t = wrap_device(device, ks.native_handle(nullptr, owner->raw_buffer()), shape_, dtype_);
    owner->raw_buffer()->host = nullptr;  // the copy outlives this tensor's host memory
    t.device_owner_ = owner;              // Halide frees the device copy with the buffer
    return t;
}

}  // namespace hmha
