// HalideMHA public API: multi-head attention with torch.nn.MultiheadAttention's
// semantics (eval mode), computed by Halide-generated static kernels.
//
//   hmha::Options opt;               // embed_dim, num_heads, kdim, vdim, ...
//   hmha::MultiheadAttention mha(opt, state_dict);
//   hmha::ForwardResult r = mha.forward(query, key, value, {.need_weights = false});
//
// Every argument is validated before any kernel runs; a bad one throws
// hmha::Error naming the argument, the expected and the actual value.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace hmha {

// Invalid argument, unavailable device, malformed file: the message names the
// argument with the expected and the actual value.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

enum class DType { F32, Bool };
enum class Device { CPU, CUDA, OpenCL };

const char *to_string(DType d);
const char *to_string(Device d);
// "cpu", "cuda", "opencl"; throws Error for anything else.
Device parse_device(const std::string &name);
// Waits until the work this library queued on `device` has finished. On a GPU,
// forward() returns once its kernels are queued (device outputs may still be
// being written; to_host() waits by itself): call this before reading device
// outputs through native_handle() from other code, or to time forward(). A
// no-op for Device::CPU; throws Error for a device this build or machine lacks.
void synchronize(Device device);

// A dense, row-major tensor (PyTorch's layout). It either owns its storage or
// views memory the caller keeps alive (Tensor::wrap). Copies share storage.
// Owning storage of 1 MiB or more is kept, when its last copy goes, in a
// process-wide cache of up to 256 MiB for the next tensor of the same size
// (forward()'s outputs in a loop reuse mapped pages instead of faulting in
// fresh ones); that memory stays with the process.
class Tensor {
public:
    Tensor() = default;
    // Zero-filled, owning.
    Tensor(std::vector<int64_t> shape, DType dtype = DType::F32);
    // Owning, contents unspecified: for outputs that are about to be overwritten.
    static Tensor uninitialized(std::vector<int64_t> shape, DType dtype = DType::F32);
    static Tensor from_floats(std::vector<int64_t> shape, const std::vector<float> &values);
    // Bool tensor from 0/1 bytes (nonzero = true).
    static Tensor from_bools(std::vector<int64_t> shape, const std::vector<uint8_t> &values);
    // Non-owning view of caller memory: float for F32, one byte per element for Bool.
    static Tensor wrap(void *data, std::vector<int64_t> shape, DType dtype = DType::F32);
    // Non-owning view of dense row-major device memory the caller keeps alive:
    // a CUdeviceptr for Device::CUDA, a cl_mem for Device::OpenCL. forward() on a
    // module of that device reads such inputs in place, and when `query` is on
    // the device it returns the outputs there too (owned by the returned Tensor).
    static Tensor wrap_device(Device device, uint64_t native_handle, std::vector<int64_t> shape,
                              DType dtype = DType::F32);

    // Where the data lives. Device tensors have no host pointer (f32() and
    // bytes() return null): read them with to_host() or through native_handle().
    Device device() const { return device_; }
    uint64_t native_handle() const { return device_handle_; }
    // A host copy of a device tensor; a host tensor returns itself.
    Tensor to_host() const;
    // An owning copy on `device` (its memory freed with the last copy of the
    // returned Tensor): inputs that stay on a GPU across forward() calls. A
    // tensor already there returns itself; Device::CPU is to_host(). Throws
    // Error for a device this build or machine lacks.
    Tensor to_device(Device device) const;

    const std::vector<int64_t> &shape() const { return shape_; }
    int64_t dim() const { return (int64_t)shape_.size(); }
    int64_t size(int64_t d) const;  // negative d counts from the end
    int64_t numel() const;
    DType dtype() const { return dtype_; }
    bool defined() const { return data_ != nullptr || device_handle_ != 0 || numel() == 0; }
    size_t nbytes() const;

    float *f32();
    const float *f32() const;
    uint8_t *bytes();
    const uint8_t *bytes() const;
    // Element at a flat row-major index, as float (Bool gives 0 or 1).
    float at(int64_t flat_index) const;

    std::string shape_str() const;  // "(2, 3, 4)"

    // The same storage under another shape with the same number of elements.
    Tensor reshape(std::vector<int64_t> shape) const;

private:
    std::vector<int64_t> shape_;
    DType dtype_ = DType::F32;
    std::shared_ptr<uint8_t[]> storage_;
    void *data_ = nullptr;
    Device device_ = Device::CPU;
    uint64_t device_handle_ = 0;
    std::shared_ptr<void> device_owner_;  // keeps device memory the runtime allocated alive

    friend class MultiheadAttention;
};

// How forward() holds its scratch when need_weights=false (need_weights=true
// always uses Sequence; so does a GPU for heads wider than its fused sdpa takes,
// or with GpuAttention::Unfused).
enum class Scratch {
    // On a GPU: Sequence (PerHead is 1.55x-6.8x slower there: H100,
    // bench/results/h100-2026-11-27b.md). On the CPU:
    // PerHead when Sequence's scratch (of one pass of batch_chunk batches)
    // would exceed kPerHeadAboveBytes (so at L = S = 8192, E = 512, where
    // PerHead keeps the peak within 1.2x of inputs, outputs and parameters),
    // Sequence otherwise, which is as fast or faster: measured on 2 cores of
    // Zen 4 (AVX-512, 2026-11-26) Sequence 4-6% faster at (1, 512, 512, 512, 8),
    // 1-2% at (1, 1024, 1024, 512, 8), 3-4% at (1, 4096, 1024, 512, 8) and
    // at (4, 512, 512, 512, 8), PerHead 0-2% faster at (1, 2048, 2048, 512, 8);
    // on 2 cores of Zen 3 (AVX2, 2026-11-27, three alternated rounds, ms)
    // Sequence / PerHead 212-249 / 229-313 at (1, 4096, 2048, 512, 8),
    // 334-419 / 403-581 at (1, 2048, 2048, 1024, 16) and 408-449 / 435-518 at
    // (1, 4096, 4096, 512, 8) (until then Auto chose PerHead for those, from
    // 512 queries and more than 1024 keys).
    Auto,
    // Q, K, V and the attention output of the whole input: 2 * (L + S') * N * E
    // floats, kept by the module between calls (on the CPU, of
    // Options::batch_chunk batches at a time). Fewest kernel calls,
    // fastest for many short sequences.
    Sequence,
    // On the CPU, Q and then the attention output live in the output tensor;
    // K and V are projected one head (or a few narrow heads) at a time, and the
    // output projection runs in place a block of rows at a time. Scratch is
    // about 2 * S' * max(head_dim, 64) floats (K^T rounded up to whole key
    // blocks) plus 128 KiB: peak memory stays near inputs + outputs + weights
    // however long the sequences are (1.16x at L = S = 8192, E = 512).
    // On a GPU, Q, K and V are projected for a group of heads at a time (at
    // least 64 features; short of all heads, a multiple of 64), each group's
    // attention goes into its columns of the output, and the output
    // projection runs in place, copying blocks of rows into Q's scratch (free
    // by then): scratch is (L + 2 * S') * N * width floats, i.e. 3/8 of the
    // output at L = S', E = 512, 8 heads, against Sequence's
    // 2 * (L + S') * N * E (4x the output). On an H100 (2026-11-27) peak
    // device memory 1.17x of inputs + outputs + parameters at L = S = 8192
    // (Sequence: 2.78x), at 1.55x Sequence's time there and up to 6.8x at
    // shorter sequences (many 64-column projections and one-head launches).
    PerHead,
};
constexpr int64_t kPerHeadAboveBytes = int64_t(48) << 20;
// Options::batch_chunk = 0: Sequence's passes hold about this much scratch per thread.
constexpr int64_t kSequenceChunkBytesPerThread = int64_t(1) << 20;
const char *to_string(Scratch s);
// "auto", "sequence", "per-head"; throws Error for anything else.
Scratch parse_scratch(const std::string &name);

// How need_weights=false attends on a GPU (the CPU always runs its fused kernels).
enum class GpuAttention {
    // The fused flash-style sdpa kernel (no L x S buffer), except for heads wider
    // than its shared memory holds (128), which take the unfused path.
    Fused,
    // masked_softmax into per-head weights of one query chunk (1024 queries x
    // S' keys x H heads of scratch), then weights @ V: the need_weights
    // kernels, GEMM-shaped, without the weights output. On an H100
    // (2026-11-27, bench/gpu/compare.py) 2-27% slower than Fused up to
    // L = 1024, within 2% of it from 2048 on.
    Unfused,
};
const char *to_string(GpuAttention a);
// "fused", "unfused"; throws Error for anything else.
GpuAttention parse_gpu_attention(const std::string &name);

// Constructor arguments of nn.MultiheadAttention. kdim/vdim of 0 mean embed_dim.
struct Options {
    int64_t embed_dim = 0;
    int64_t num_heads = 0;
    double dropout = 0.0;  // accepted, no effect (eval mode)
    bool bias = true;
    bool add_bias_kv = false;
    bool add_zero_attn = false;
    int64_t kdim = 0;
    int64_t vdim = 0;
    bool batch_first = false;
    Device device = Device::CPU;
    Scratch scratch = Scratch::Auto;  // not in PyTorch: memory policy of need_weights=false
    // Not in PyTorch: batches the Sequence path projects, attends and projects
    // out per pass on the CPU, so that a pass's scratch stays in cache; 0 =
    // about kSequenceChunkBytesPerThread of it per thread (at least one batch),
    // N or more = all at once (as on a GPU). With (L, N, E) inputs a pass of
    // fewer than N batches holds one (its rows are N * E floats apart).
    int64_t batch_chunk = 0;
    GpuAttention gpu_attention = GpuAttention::Fused;  // not in PyTorch

    // Reads embed_dim, kdim, vdim, bias and add_bias_kv from which state_dict
    // tensors exist and their shapes (as the CLI does).
    static Options from_state_dict(const std::map<std::string, Tensor> &state_dict, int64_t num_heads);
};

struct ForwardOptions {
    std::optional<Tensor> key_padding_mask;  // (N, S) or (S); bool (true = hidden) or float (added)
    bool need_weights = true;
    std::optional<Tensor> attn_mask;  // (L, S) or (N*H, L, S) / (H, L, S); bool or float
    bool average_attn_weights = true;
    bool is_causal = false;
};

struct ForwardResult {
    Tensor attn_output;
    std::optional<Tensor> attn_output_weights;  // present when need_weights
};

class MultiheadAttention {
public:
    // state_dict uses PyTorch's names (in_proj_weight, out_proj.weight, ...).
    MultiheadAttention(const Options &options, const std::map<std::string, Tensor> &state_dict);
    ~MultiheadAttention();
    MultiheadAttention(MultiheadAttention &&) noexcept;
    MultiheadAttention &operator=(MultiheadAttention &&) noexcept;

    ForwardResult forward(const Tensor &query, const Tensor &key, const Tensor &value,
                          const ForwardOptions &options = {}) const;

    const Options &options() const;
    int64_t head_dim() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace hmha
