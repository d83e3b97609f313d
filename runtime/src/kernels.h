// The generated kernels of one device family, as typed function pointers, so
// the runtime dispatches by device without knowing which libraries exist.
// Every build has the CPU family; a GPU family is there when the build
// generated it (HMHA_TARGETS), which CMake says with HMHA_HAVE_OPENCL and
// HMHA_HAVE_CUDA (0 or 1).
#pragma once

#ifndef HMHA_HAVE_OPENCL
#define HMHA_HAVE_OPENCL 1
#endif
#ifndef HMHA_HAVE_CUDA
#define HMHA_HAVE_CUDA 1
#endif

#include <cstdint>
#include <string>
#include <type_traits>

#include "HalideRuntime.h"
#include "hmha/hmha.h"
#include "hmha_attend_cpu.h"
#include "hmha_head_mean_cpu.h"
#include "hmha_linear_cpu.h"
#include "hmha_masked_softmax_cpu.h"
#include "hmha_sdpa_copy_v_cpu.h"
#include "hmha_sdpa_cpu.h"
#include "hmha_sdpa_kt_cpu.h"
#include "hmha_sdpa_kt_short_cpu.h"
#include "hmha_sdpa_rows_copy_v_cpu.h"
#include "hmha_sdpa_rows_cpu.h"
#include "hmha_sdpa_short_copy_v_cpu.h"
#include "hmha_sdpa_short_cpu.h"
#include "hmha_softmax_attend_copy_v_cpu.h"
#include "hmha_softmax_attend_cpu.h"
#include "hmha_softmax_attend_long_copy_v_cpu.h"
#include "hmha_softmax_attend_long_cpu.h"
#include "hmha_softmax_attend_mean_copy_v_cpu.h"
#include "hmha_softmax_attend_mean_cpu.h"
#include "hmha_softmax_attend_mean_long_copy_v_cpu.h"
#include "hmha_softmax_attend_mean_long_cpu.h"

// The CPU sdpa classes' key blocks (CMakeLists.txt passes the built ones).
#ifndef HMHA_SDPA_KEY_BLOCK
#define HMHA_SDPA_KEY_BLOCK 256
#endif
#ifndef HMHA_SDPA_SHORT_KEY_BLOCK
#define HMHA_SDPA_SHORT_KEY_BLOCK 128
#endif
#ifndef HMHA_SDPA_KT_KEY_BLOCK
#define HMHA_SDPA_KT_KEY_BLOCK 256
#endif
#ifndef HMHA_SDPA_KT_SHORT_KEY_BLOCK
#define HMHA_SDPA_KT_SHORT_KEY_BLOCK 128
#endif

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
    // Shape classes: a second sdpa built with a shorter key block, for short
    // key sequences (null: the family has one sdpa).
    decltype(&hmha_sdpa_cpu) sdpa_short = nullptr;
    int sdpa_key_block = 0, sdpa_short_key_block = 0;
    // And one with whole rows of keys (no key blocks), for at most
    // kSdpaRowsMaxKeys keys (null: none).
    decltype(&hmha_sdpa_rows_cpu) sdpa_rows = nullptr;
    // sdpa_rows, sdpa and sdpa_short copying each head's V into contiguous
    // rows first (null: none).
    decltype(&hmha_sdpa_rows_copy_v_cpu) sdpa_rows_copy_v = nullptr;
    decltype(&hmha_sdpa_copy_v_cpu) sdpa_copy_v = nullptr;
    decltype(&hmha_sdpa_short_copy_v_cpu) sdpa_short_copy_v = nullptr;
    // The sdpa to call for `keys` keys and `queries` queries, V's rows
    // `value_row_stride` floats apart (sdpa_classes.h).
    decltype(&hmha_sdpa_cpu) sdpa_for(int64_t keys, int64_t queries, int64_t value_row_stride) const;
    // The CPU's sdpa classes reading K^T (keys_transposed), for
    // Scratch::PerHead: k must hold the keys rounded up to whole key blocks of
    // the class called (kt_for), at most kt_padded_keys(keys) of them.
    decltype(&hmha_sdpa_cpu) sdpa_kt = nullptr, sdpa_kt_short = nullptr;
    int sdpa_kt_key_block = 0, sdpa_kt_short_key_block = 0;
    struct KtClass {
        decltype(&hmha_sdpa_cpu) sdpa;
        int64_t padded_keys;
    };
    KtClass kt_for(int64_t keys) const;
    int64_t kt_padded_keys(int64_t keys) const;
    // The CPU's masked_softmax and attend in one kernel (null on a GPU): the
    // per-head weights and their product with V, one query block at a time.
    decltype(&hmha_softmax_attend_cpu) softmax_attend = nullptr;
    // The same with the weights averaged over heads (null on a GPU): a query
    // block's heads in turn, only their mean written.
    decltype(&hmha_softmax_attend_mean_cpu) softmax_attend_mean = nullptr;
    // And copying each head's V into contiguous rows first (null: none).
    decltype(&hmha_softmax_attend_mean_copy_v_cpu) softmax_attend_mean_copy_v = nullptr;
    // Both with key chunks, for kSoftmaxAttendMeanLongKeys keys or more (null: none).
    decltype(&hmha_softmax_attend_mean_long_cpu) softmax_attend_mean_long = nullptr;
    decltype(&hmha_softmax_attend_mean_long_copy_v_cpu) softmax_attend_mean_long_copy_v = nullptr;
    // The one to call for `queries` queries reading `keys` rows of V
    // `value_row_stride` floats apart (sdpa_classes.h).
    decltype(&hmha_softmax_attend_mean_cpu) softmax_attend_mean_for(int64_t keys, int64_t queries,
                                                                   int64_t value_row_stride) const;
    // softmax_attend copying each head's V into contiguous rows first (null:
    // none), and the one of the two to call, as softmax_attend_mean_for.
    decltype(&hmha_softmax_attend_copy_v_cpu) softmax_attend_copy_v = nullptr;
    // Both with key chunks, for kSoftmaxAttendLongKeys keys or more (null: none).
    decltype(&hmha_softmax_attend_long_cpu) softmax_attend_long = nullptr;
    decltype(&hmha_softmax_attend_long_copy_v_cpu) softmax_attend_long_copy_v = nullptr;
    decltype(&hmha_softmax_attend_cpu) softmax_attend_for(int64_t keys, int64_t queries,
                                                          int64_t value_row_stride) const;
    // GPU families: linear reading x's rows along k as vectors (null: none),
    // for k a multiple of linear_vector_x_k and x's rows 16-byte aligned
    // (linear_for checks; a CUDA buffer's device field is its address).
    decltype(&hmha_linear_cpu) linear_vector_x = nullptr;
    int linear_vector_x_k = 0;
    bool device_field_is_address = false;
    // And linear with small blocks, for projections of few outputs (null: none).
    decltype(&hmha_linear_cpu) linear_few_rows = nullptr;
    // The linear class for input rows x and output y.
    decltype(&hmha_linear_cpu) linear_for(const halide_buffer_t *x, const halide_buffer_t *y) const;
};
static_assert(std::is_same_v<decltype(&hmha_sdpa_rows_cpu), decltype(&hmha_sdpa_cpu)> &&
                  std::is_same_v<decltype(&hmha_sdpa_rows_copy_v_cpu), decltype(&hmha_sdpa_cpu)> &&
                  std::is_same_v<decltype(&hmha_sdpa_copy_v_cpu), decltype(&hmha_sdpa_cpu)> &&
                  std::is_same_v<decltype(&hmha_sdpa_short_copy_v_cpu), decltype(&hmha_sdpa_cpu)>,
              "sdpa_rows takes sdpa's arguments: KernelSet::sdpa_for returns any");
static_assert(std::is_same_v<decltype(&hmha_softmax_attend_mean_copy_v_cpu), decltype(&hmha_softmax_attend_mean_cpu)> &&
                  std::is_same_v<decltype(&hmha_softmax_attend_mean_long_cpu), decltype(&hmha_softmax_attend_mean_cpu)> &&
                  std::is_same_v<decltype(&hmha_softmax_attend_mean_long_copy_v_cpu),
                                 decltype(&hmha_softmax_attend_mean_cpu)>,
              "KernelSet::softmax_attend_mean_for returns any");
static_assert(std::is_same_v<decltype(&hmha_softmax_attend_copy_v_cpu), decltype(&hmha_softmax_attend_cpu)> &&
                  std::is_same_v<decltype(&hmha_softmax_attend_long_cpu), decltype(&hmha_softmax_attend_cpu)> &&
                  std::is_same_v<decltype(&hmha_softmax_attend_long_copy_v_cpu), decltype(&hmha_softmax_attend_cpu)>,
              "KernelSet::softmax_attend_for returns any");

// The kernels for `device`; throws Error when this build or machine lacks it
// (the device API is initialised once, on first use). A family this build did
// not generate: "device: 'cuda' is not available: this build has no cuda kernels".
const KernelSet &kernels_for(Device device);

// Throws Error with Halide's own message when a kernel returned non-zero.
void check_status(const char *kernel, int status);

namespace detail {
// The kernel trace (HMHA_TRACE_KERNELS=1, kernels.cpp): a forward holds one
// of these; check_status times each call inside it. The switch and the report
// are test hooks (tests/test_kernel_trace.cpp declares them).
struct KernelTraceScope {
    explicit KernelTraceScope(const halide_device_interface_t *device);
    ~KernelTraceScope();
    KernelTraceScope(const KernelTraceScope &) = delete;
    KernelTraceScope &operator=(const KernelTraceScope &) = delete;
    bool on;
};
void set_kernel_trace(bool on);
std::string kernel_trace_report();
}  // namespace detail

}  // namespace hmha
