// The generated kernels of one device family, as typed function pointers, so
// the runtime dispatches by device without knowing which libraries exist.
#pragma once

#include <cstdint>

#include "HalideRuntime.h"
#include "hmha/hmha.h"
#include "hmha_attend_cpu.h"
#include "hmha_head_mean_cpu.h"
#include "hmha_linear_cpu.h"
#include "hmha_masked_softmax_cpu.h"
#include "hmha_sdpa_cpu.h"

namespace hmha {

struct KernelSet {
    decltype(&hmha_linear_cpu) linear;
    decltype(&hmha_sdpa_cpu) sdpa;
    decltype(&hmha_masked_softmax_cpu) masked_softmax;
    decltype(&hmha_attend_cpu) attend;
    decltype(&hmha_head_mean_cpu) head_mean;
    // GPU families: the device API, and the native handle (CUdeviceptr, cl_mem)
    // of a buffer's allocation, so that views of other shapes can alias it.
    // Null for the CPU.
    const halide_device_interface_t *device = nullptr;
    uintptr_t (*native_handle)(void *user_context, halide_buffer_t *buf) = nullptr;
};

// The kernels for `device`; throws Error when this build or machine lacks it
// (the device API is initialised once, on first use).
const KernelSet &kernels_for(Device device);

// Throws Error with Halide's own message when a kernel returned non-zero.
void check_status(const char *kernel, int status);

}  // namespace hmha
