// The thin runtime: validate (SPEC.md §3), describe the user's tensors to the
// generated kernels as strided Halide views (no layout copies), dispatch.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <type_traits>

#include "HalideBuffer.h"
#include "batch_passes.h"
#include "hmha/hmha.h"
#include "kernels.h"

namespace hmha {

namespace detail {
// Device scratch (DeviceViews::scratch) that the calling thread's last
// forward() allocated, in bytes: a test hook (tests/test_device_tensors.cpp,
// which declares it) for the memory of the GPU paths, which PoCL's device
// memory (host memory, with its own) cannot show.
thread_local int64_t device_scratch_bytes = 0;
int64_t last_forward_device_scratch_bytes() {
    return device_scratch_bytes;
}
}  // namespace detail

namespace {

using HBuf = Halide::Runtime::Buffer<float>;
using HBufU8 = Halide::Runtime::Buffer<uint8_t>;

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
// The largest head_dim the fused GPU sdpa runs: its block keeps the key block,
// the per-query state and P.V in shared memory, 4*(65*qb + kb*D + qb*max(64, D)
// + 3*qb*D) bytes with the default gpu_key_block kb = 32 and gpu_query_block
// qb = 8 (read from the generated .stmt): 35 KB at D = 128, under the 48 KB a
// CUDA block gets by default (the tuned register-tiled schedule, 32 keys x 16
// queries: about 46 KB). Wider heads take the unfused path (masked_softmax
// and attend, per query chunk) on a GPU. The GPU tuner (bench/gpu) only keeps
// variants that also run at D = 128.
constexpr int64_t kGpuFusedMaxHeadDim = 128;

std::string str(int64_t v) {
    return std::to_string(v);
}

// A strided view: extents/strides innermost first, as Halide wants them.
template <typename T>
Halide::Runtime::Buffer<T> view(const T *data, std::initializer_list<std::pair<int64_t, int64_t>> extent_stride) {
    std::vector<halide_dimension_t> dims;
    for (auto [e, s] : extent_stride) dims.push_back(halide_dimension_t(0, (int32_t)e, (int32_t)s));
    return Halide::Runtime::Buffer<T>(const_cast<T *>(data), (int)dims.size(), dims.data());
}

// A view moved along dimension d by `delta` (its min there grows by it): its
// coordinates are renamed, its memory (host and device) stays where it is.
// Not Buffer::translate, which frees the view's device allocation (so that a
// GPU kernel writing a moved view got a fresh one each time).
template <typename T>
void shift_min(Halide::Runtime::Buffer<T> &b, int d, int64_t delta) {
    b.raw_buffer()->dim[d].min += (int32_t)delta;
}

void check_rank(const Tensor &t, const char *name, std::initializer_list<int64_t> ranks, const std::string &what) {
    for (int64_t r : ranks) {
        if (t.dim() == r) return;
    }
    std::string expect;
    for (int64_t r : ranks) expect += (expect.empty() ? "" : " or ") + str(r) + "-D";
    throw Error(std::string(name) + ": expected a " + expect + " tensor " + what + ", got shape " + t.shape_str());
}

void check_f32(const Tensor &t, const char *name) {
    if (t.dtype() != DType::F32) {
        throw Error(std::string(name) + ": expected dtype float32, got " + to_string(t.dtype()));
    }
}

void check_int32(const char *what, int64_t elements) {
    if (elements > kInt32Max) {
        throw Error(std::string(what) + ": " + str(elements) +
                    " elements overflow the kernels' int32 indexing (at most " + str(kInt32Max) + ")");
    }
}

// W (out, in) row-major -> W^T (in, out) row-major: Halide's weight_t(o, k).
std::vector<float> transposed(const Tensor &w) {
    int64_t out = w.size(0), in = w.size(1);
    std::vector<float> t((size_t)(out * in));
    for (int64_t o = 0; o < out; o++) {
        for (int64_t k = 0; k < in; k++) t[(size_t)(k * out + o)] = w.f32()[o * in + k];
    }
    return t;
}

struct Projection {
    std::vector<float> weight_t;  // (in, out) row-major
    std::vector<float> bias;      // (out), zeros without bias
    int64_t in = 0, out = 0;
    HBuf weight_buf, bias_buf;  // views of the above; on a GPU uploaded once, at construction

    void make_buffers(const KernelSet &ks) {
        weight_buf = view(weight_t.data(), {{out, 1}, {in, out}});
        bias_buf = view(bias.data(), {{out, 1}});
        if (ks.device) {
            weight_buf.set_host_dirty();
            bias_buf.set_host_dirty();
            check_status("weight upload", weight_buf.copy_to_device(ks.device));
            check_status("weight upload", bias_buf.copy_to_device(ks.device));
        }
    }
};

// y(o, r) = b(o) + sum_k W(o, k) x(k, r) for every row r of x (K, R) into y (O, R).
void project(const KernelSet &ks, Projection &p, HBuf &x, HBuf &y) {
    if (x.dim(1).extent() == 0) return;
    check_status("linear", ks.linear_for(x.raw_buffer(), y.raw_buffer())(x.raw_buffer(), p.weight_buf.raw_buffer(),
                                                                         p.bias_buf.raw_buffer(), y.raw_buffer()));
}

// How the caller's memory and the scratch reach a device family. On the CPU
// every view is plain host memory. On a GPU, inputs are copied up when first
// used, scratch lives on the device only (views of other shapes alias the same
// allocation through its native handle), and outputs are copied back.
struct DeviceViews {
    const KernelSet &ks;
    // Device copies that views made by input() read, and the zero rows that
    // zeros() views; held until the views go.
    mutable std::vector<std::shared_ptr<void>> keep;

    // b as a view of this family's device memory `handle`, with b's own strides.
    template <typename T>
    void on_device(Halide::Runtime::Buffer<T> &b, uint64_t handle, const char *what) const {
        check_status(what, b.device_wrap_native(ks.device, handle));
        b.set_device_dirty();
    }

    // A host view, as a kernel input. On a GPU, a view that repeats its data
    // along zero-stride dimensions (the absent masks, a 2-D mask over heads and
    // batches) goes up as its data alone, in one copy, and is viewed there with
    // the same strides: Halide copies the view itself one row per repeat
    // (measured on an H100: 200 ms of a 1 ms forward at N = 4, L = 512, H = 8).
    template <typename T>
    Halide::Runtime::Buffer<T> input(Halide::Runtime::Buffer<T> b) const {
        if (!ks.device) return b;
        std::vector<halide_dimension_t> dense;
        for (int i = 0; i < b.dimensions(); i++) {
            if (b.dim(i).stride() != 0) dense.push_back(b.raw_buffer()->dim[i]);
        }
        if ((int)dense.size() == b.dimensions()) {
            b.set_host_dirty();
            return b;
        }
        auto data = std::make_shared<Halide::Runtime::Buffer<T>>(b.data(), (int)dense.size(), dense.data());
        data->set_host_dirty();
        check_status("copy_to_device", data->copy_to_device(ks.device));
        keep.push_back(data);
        on_device(b, ks.native_handle(nullptr, data->raw_buffer()), "wrap input");
        return b;
    }
    // A view of an input tensor, on the host or already on this device.
    template <typename T>
    Halide::Runtime::Buffer<T> input(const Tensor &t,
                                     std::initializer_list<std::pair<int64_t, int64_t>> extent_stride) const {
        if (t.device() == Device::CPU) return input(view(reinterpret_cast<const T *>(t.bytes()), extent_stride));
        auto b = view(static_cast<const T *>(nullptr), extent_stride);
        on_device(b, t.native_handle(), "wrap input");
        return b;
    }
    // A scratch allocation (device memory on a GPU) of the view's shape.
    // Empty ones get none (the device APIs abort on a zero-byte allocation).
    HBuf scratch(HBuf b) const {
        if (ks.device && b.number_of_elements() > 0) {
            check_status("device_malloc", b.device_malloc(ks.device));
            detail::device_scratch_bytes += (int64_t)b.size_in_bytes();
        }
        return b;
    }
    // Another shape over the same memory as `owner` (same start).
    HBuf alias(HBuf &owner, HBuf b) const {
        if (ks.device && owner.has_device_allocation()) {
            on_device(b, ks.native_handle(nullptr, owner.raw_buffer()), "alias");
        }
        return b;
    }
    // A zero-stride view of a cached row of zeros (ZeroRows), on the host or
    // on this device, whose first dimension `extent_stride` starts with.
    template <typename T>
    Halide::Runtime::Buffer<T> zeros(std::shared_ptr<Halide::Runtime::Buffer<T>> row,
                                     std::initializer_list<std::pair<int64_t, int64_t>> extent_stride) const {
        auto b = view(static_cast<const T *>(row->data()), extent_stride);
        if (ks.device) on_device(b, ks.native_handle(nullptr, row->raw_buffer()), "wrap input");
        keep.push_back(row);
        return b;
    }
    void to_host(HBuf &b) const {
        if (ks.device) check_status("copy_to_host", b.copy_to_host());
    }
};

// The rows of zeros that absent masks are zero-stride views of, kept by the
// module and grown on demand (never shrunk), on the host and, on a GPU, on the
// device too: a fresh zero row per forward cost three synchronous
// host-to-device copies a call there. A call holds the rows it views (a
// shared_ptr), so growing them under another call's feet frees nothing in use.
class ZeroRows {
public:
    template <typename T>
    std::shared_ptr<Halide::Runtime::Buffer<T>> get(const KernelSet &ks, int64_t n) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto &row = slot<T>();
        if (!row || row->dim(0).extent() < n) {
            auto grown = std::make_shared<Halide::Runtime::Buffer<T>>((int)n);
            grown->fill(T(0));
            if (ks.device) {
                grown->set_host_dirty();
                check_status("copy_to_device", grown->copy_to_device(ks.device));
            }
            row = grown;
        }
        return row;
    }

private:
    template <typename T>
    std::shared_ptr<Halide::Runtime::Buffer<T>> &slot() {
        if constexpr (std::is_same_v<T, float>) {
            return f32_;
        } else {
            return u8_;
        }
    }
    std::mutex mutex_;
    std::shared_ptr<HBuf> f32_;
    std::shared_ptr<HBufU8> u8_;
};

// Grow-only scratch arenas, one per concurrent forward() call on a module.
struct Workspace {
    std::unique_ptr<float[]> data;
    size_t capacity = 0;  // floats
};

class WorkspacePool {
public:
    std::unique_ptr<Workspace> acquire() {
        std::lock_guard<std::mutex> lock(mutex_);
        if (free_.empty()) return std::make_unique<Workspace>();
        auto w = std::move(free_.back());
        free_.pop_back();
        return w;
    }
    void release(std::unique_ptr<Workspace> w) {
        std::lock_guard<std::mutex> lock(mutex_);
        free_.push_back(std::move(w));
    }

private:
    std::mutex mutex_;
    std::vector<std::unique_ptr<Workspace>> free_;
};

// Carves float arrays of the given sizes out of one workspace for one call.
class WorkspaceLease {
public:
    WorkspaceLease(WorkspacePool &pool, std::initializer_list<int64_t> sizes) : pool_(pool), ws_(pool.acquire()) {
        size_t total = 0;
        for (int64_t n : sizes) {
            offsets_.push_back(total);
            total += ((size_t)n + 15) & ~(size_t)15;  // 64-byte aligned slices
        }
        if (total > ws_->capacity) {
            ws_->data.reset(new float[total]);
            ws_->capacity = total;
        }
    }
    ~WorkspaceLease() { pool_.release(std::move(ws_)); }
    float *operator[](size_t i) const { return ws_->data.get() + offsets_[i]; }

private:
    WorkspacePool &pool_;
    std::unique_ptr<Workspace> ws_;
    std::vector<size_t> offsets_;
};

}  // namespace

struct MultiheadAttention::Impl {
    Options opt;
    std::unique_ptr<WorkspacePool> workspaces = std::make_unique<WorkspacePool>();
    int64_t head_dim = 0;
    const KernelSet *kernels = nullptr;
    mutable Projection q, k, v, o;  // mutable: kernels take non-const buffers, but never write weights
    std::vector<float> bias_k, bias_v;  // (E) when add_bias_kv
    mutable ZeroRows zero_rows;         // what absent masks view
};

static void validate_options(Options &o) {
    if (o.embed_dim <= 0 || o.num_heads <= 0) {
        throw Error("embed_dim and num_heads must be greater than 0, got embed_dim=" + str(o.embed_dim) +
                    " and num_heads=" + str(o.num_heads));
    }
    if (o.embed_dim % o.num_heads != 0) {
        throw Error("embed_dim must be divisible by num_heads, got embed_dim=" + str(o.embed_dim) +
                    " and num_heads=" + str(o.num_heads));
    }
    if (o.kdim < 0 || o.vdim < 0) {
        throw Error("kdim and vdim must be positive (or 0 for embed_dim), got kdim=" + str(o.kdim) +
                    " and vdim=" + str(o.vdim));
    }
    if (o.batch_chunk < 0) {
        throw Error("batch_chunk: expected >= 0 (0 = auto), got " + str(o.batch_chunk));
    }
    if (o.kdim == 0) o.kdim = o.embed_dim;
    if (o.vdim == 0) o.vdim = o.embed_dim;
    if (!(o.dropout >= 0.0 && o.dropout <= 1.0)) {
        std::ostringstream os;
        os << "dropout: expected a probability in [0, 1], got " << o.dropout;
        throw Error(os.str());
    }
    check_int32("embed_dim * kdim", o.embed_dim * std::max(o.kdim, std::max(o.vdim, o.embed_dim)));
}

static void validate_state_dict(const Options &o, const std::map<std::string, Tensor> &sd) {
    const int64_t E = o.embed_dim;
    std::map<std::string, std::vector<int64_t>> expected;
    if (o.kdim == E && o.vdim == E) {
        expected["in_proj_weight"] = {3 * E, E};
    } else {
        expected["q_proj_weight"] = {E, E};
        expected["k_proj_weight"] = {E, o.kdim};
        expected["v_proj_weight"] = {E, o.vdim};
    }
    expected["out_proj.weight"] = {E, E};
    if (o.bias) {
        expected["in_proj_bias"] = {3 * E};
        expected["out_proj.bias"] = {E};
    }
    if (o.add_bias_kv) {
        expected["bias_k"] = {1, 1, E};
        expected["bias_v"] = {1, 1, E};
    }
    for (const auto &[name, shape] : expected) {
        auto it = sd.find(name);
        if (it == sd.end()) {
            throw Error("state_dict: missing tensor '" + name + "' of shape " +
                        Tensor::wrap(nullptr, shape).shape_str() + " (embed_dim=" + str(E) +
                        ", kdim=" + str(o.kdim) + ", vdim=" + str(o.vdim) + ", bias=" + (o.bias ? "true" : "false") +
                        ", add_bias_kv=" + (o.add_bias_kv ? "true" : "false") + ")");
        }
        if (it->second.shape() != shape) {
            throw Error("state_dict['" + name + "']: expected shape " + Tensor::wrap(nullptr, shape).shape_str() +
                        ", got " + it->second.shape_str());
        }
        check_f32(it->second, ("state_dict['" + name + "']").c_str());
        if (!it->second.defined()) throw Error("state_dict['" + name + "']: tensor has no data");
    }
    for (const auto &[name, t] : sd) {
        if (!expected.count(name)) {
            throw Error("state_dict: unexpected tensor '" + name + "' of shape " + t.shape_str() +
                        " for embed_dim=" + str(E) + ", kdim=" + str(o.kdim) + ", vdim=" + str(o.vdim) +
                        ", bias=" + (o.bias ? "true" : "false") +
                        ", add_bias_kv=" + (o.add_bias_kv ? "true" : "false"));
        }
    }
}

MultiheadAttention::MultiheadAttention(const Options &options, const std::map<std::string, Tensor> &sd)
    : impl_(std::make_unique<Impl>()) {
    Impl &m = *impl_;
    m.opt = options;
    validate_options(m.opt);
    validate_state_dict(m.opt, sd);
    m.kernels = &kernels_for(m.opt.device);
    const int64_t E = m.opt.embed_dim;
    m.head_dim = E / m.opt.num_heads;

    auto make = [&](const Tensor &w, int64_t row0, const float *bias) {
        Projection p;
        p.out = E;
        p.in = w.size(1);
        Tensor rows = Tensor::wrap(const_cast<float *>(w.f32()) + row0 * p.in, {E, p.in});
        p.weight_t = transposed(rows);
        p.bias.assign((size_t)E, 0.0f);
        if (bias) std::memcpy(p.bias.data(), bias, (size_t)E * sizeof(float));
        return p;
    };
    const float *in_bias = m.opt.bias ? sd.at("in_proj_bias").f32() : nullptr;
    if (sd.count("in_proj_weight")) {
        const Tensor &w = sd.at("in_proj_weight");
        m.q = make(w, 0, in_bias);
        m.k = make(w, E, in_bias ? in_bias + E : nullptr);
        m.v = make(w, 2 * E, in_bias ? in_bias + 2 * E : nullptr);
    } else {
        m.q = make(sd.at("q_proj_weight"), 0, in_bias);
        m.k = make(sd.at("k_proj_weight"), 0, in_bias ? in_bias + E : nullptr);
        m.v = make(sd.at("v_proj_weight"), 0, in_bias ? in_bias + 2 * E : nullptr);
    }
    m.o = make(sd.at("out_proj.weight"), 0, m.opt.bias ? sd.at("out_proj.bias").f32() : nullptr);
    if (m.opt.add_bias_kv) {
        m.bias_k.assign(sd.at("bias_k").f32(), sd.at("bias_k").f32() + E);
        m.bias_v.assign(sd.at("bias_v").f32(), sd.at("bias_v").f32() + E);
    }
    for (Projection *p : {&m.q, &m.k, &m.v, &m.o}) p->make_buffers(*m.kernels);
}

MultiheadAttention::~MultiheadAttention() = default;
MultiheadAttention::MultiheadAttention(MultiheadAttention &&) noexcept = default;
MultiheadAttention &MultiheadAttention::operator=(MultiheadAttention &&) noexcept = default;

const Options &MultiheadAttention::options() const {
    return impl_->opt;
}

int64_t MultiheadAttention::head_dim() const {
    return impl_->head_dim;
}

namespace {

// The problem's sizes and how each (position, batch) row sits in memory.
struct Geometry {
    bool batched = true;
    int64_t L = 0, S = 0, N = 1, E = 0, H = 0, D = 0;
    int64_t extra = 0;  // appended keys: bias_kv and/or zero_attn
    // Row strides (in rows of E floats) of position and batch in the caller's layout.
    int64_t q_pos = 0, q_batch = 0, kv_pos = 0, kv_batch = 0;
    int64_t keys() const { return S + extra; }
};

Geometry validate_inputs(const Options &o, const Tensor &query, const Tensor &key, const Tensor &value,
                         const ForwardOptions &f) {
    Geometry g;
    g.E = o.embed_dim;
    g.H = o.num_heads;
    g.D = g.E / g.H;
    check_rank(query, "query", {2, 3}, "((L, E) unbatched, or batched)");
    g.batched = query.dim() == 3;
    const char *layout = !g.batched ? "(L, E)" : o.batch_first ? "(N, L, E)" : "(L, N, E)";
    check_rank(key, "key", {query.dim()}, std::string("like query ") + layout);
    check_rank(value, "value", {query.dim()}, std::string("like query ") + layout);
    check_f32(query, "query");
    check_f32(key, "key");
    check_f32(value, "value");
    auto check_last = [](const Tensor &t, const char *name, const char *dimname, int64_t want) {
        if (t.size(-1) != want) {
            throw Error(std::string(name) + ": expected last dimension " + dimname + "=" + str(want) + ", got " +
                        str(t.size(-1)) + " (shape " + t.shape_str() + ")");
        }
    };
    check_last(query, "query", "embed_dim", g.E);
    check_last(key, "key", "kdim", o.kdim);
    check_last(value, "value", "vdim", o.vdim);

    if (g.batched) {
        int bd = o.batch_first ? 0 : 1, sd = o.batch_first ? 1 : 0;
        g.N = query.size(bd);
        g.L = query.size(sd);
        g.S = key.size(sd);
        if (key.size(bd) != g.N) {
            throw Error("key: expected batch size " + str(g.N) + " (from query " + query.shape_str() + "), got " +
                        str(key.size(bd)) + " (shape " + key.shape_str() + ")");
        }
        if (value.size(bd) != g.N) {
            throw Error("value: expected batch size " + str(g.N) + " (from query " + query.shape_str() + "), got " +
                        str(value.size(bd)) + " (shape " + value.shape_str() + ")");
        }
        if (value.size(sd) != g.S) {
            throw Error("value: expected sequence length " + str(g.S) + " (from key " + key.shape_str() + "), got " +
                        str(value.size(sd)) + " (shape " + value.shape_str() + ")");
        }
    } else {
        g.N = 1;
        g.L = query.size(0);
        g.S = key.size(0);
        if (value.size(0) != g.S) {
            throw Error("value: expected sequence length " + str(g.S) + " (from key " + key.shape_str() + "), got " +
                        str(value.size(0)) + " (shape " + value.shape_str() + ")");
        }
    }
    g.extra = (o.add_bias_kv ? 1 : 0) + (o.add_zero_attn ? 1 : 0);
    if (!g.batched || o.batch_first) {
        g.q_pos = 1, g.q_batch = g.L, g.kv_pos = 1, g.kv_batch = g.S;
    } else {
        g.q_pos = g.N, g.q_batch = 1, g.kv_pos = g.N, g.kv_batch = 1;
    }

    if (f.key_padding_mask) {
        const Tensor &m = *f.key_padding_mask;
        std::vector<int64_t> want = g.batched ? std::vector<int64_t>{g.N, g.S} : std::vector<int64_t>{g.S};
        if (m.shape() != want) {
            throw Error("key_padding_mask: expected shape " + Tensor::wrap(nullptr, want).shape_str() + " (" +
                        (g.batched ? "N, S" : "S") + "), got " + m.shape_str());
        }
    }
    if (f.attn_mask) {
        const Tensor &m = *f.attn_mask;
        std::vector<int64_t> two{g.L, g.S};
        std::vector<int64_t> three{g.batched ? g.N * g.H : g.H, g.L, g.S};
        if (m.shape() != two && m.shape() != three) {
            throw Error("attn_mask: expected shape " + Tensor::wrap(nullptr, two).shape_str() + " or " +
                        Tensor::wrap(nullptr, three).shape_str() + (g.batched ? " (N*H, L, S)" : " (H, L, S)") +
                        ", got " + m.shape_str());
        }
    }
    // Everything the kernels index must fit int32 (Halide buffers and index math).
    check_int32("query", query.numel());
    check_int32("key", key.numel());
    check_int32("value", value.numel());
    check_int32("projected key/value (N*(S+extra)*E)", g.N * g.keys() * g.E);
    if (f.attn_mask) check_int32("attn_mask", f.attn_mask->numel());
    if (f.need_weights) check_int32("attn_output_weights per head (N*H*L*S')", g.N * g.H * g.L * g.keys());
    for (int64_t v : {g.L, g.S + g.extra, g.N, g.E}) check_int32("a dimension", v);
    std::vector<std::pair<const Tensor *, const char *>> data{{&query, "query"}, {&key, "key"}, {&value, "value"}};
    if (f.key_padding_mask) data.emplace_back(&*f.key_padding_mask, "key_padding_mask");
    if (f.attn_mask) data.emplace_back(&*f.attn_mask, "attn_mask");
    for (const auto &[t, name] : data) {
        if (t->device() != Device::CPU && t->device() != o.device) {
            throw Error(std::string(name) + ": expected a tensor on the host or on the module's device '" +
                        to_string(o.device) + "', got one on '" + to_string(t->device()) + "'");
        }
        if (!t->defined()) {
            throw Error(std::string(name) + ": expected data for shape " + t->shape_str() + ", got a null pointer");
        }
    }
    return g;
}

// The query, key and value rows, (E, L*N), (kdim, S*N) and (vdim, S*N), as
// kernel inputs (DeviceViews::input). A host tensor passed as several of them
// (self-attention, or key = value) is one view, so that on a GPU it goes up
// once. No key or value views when S = 0.
class InputRows {
public:
    InputRows(const DeviceViews &dv, const Geometry &g, const Options &o, const Tensor &query, const Tensor &key,
              const Tensor &value)
        : k_is_q_(same_host(key, query)), v_is_(same_host(value, query) ? 0 : same_host(value, key) ? 1 : 2) {
        q_ = dv.input<float>(query, {{g.E, 1}, {g.L * g.N, g.E}});
        if (g.S > 0 && !k_is_q_) k_ = dv.input<float>(key, {{o.kdim, 1}, {g.S * g.N, o.kdim}});
        if (g.S > 0 && v_is_ == 2) v_ = dv.input<float>(value, {{o.vdim, 1}, {g.S * g.N, o.vdim}});
    }
    InputRows(const InputRows &) = delete;
    InputRows &operator=(const InputRows &) = delete;
    HBuf &q() { return q_; }
    HBuf &k() { return k_is_q_ ? q_ : k_; }
    HBuf &v() { return v_is_ == 0 ? q_ : v_is_ == 1 ? k() : v_; }

private:
    static bool same_host(const Tensor &a, const Tensor &b) {
        return a.device() == Device::CPU && b.device() == Device::CPU && a.f32() == b.f32() && a.shape() == b.shape();
    }
    const bool k_is_q_;
    const int v_is_;  // 0: the query's view, 1: the key's, 2: its own
    HBuf q_, k_, v_;
};

// The appended key or value rows of `batches` batches (bias_kv's row `bias`,
// then add_zero_attn's zeros), in K/V scratch whose row of key s of batch n
// is s * kv_pos + n * kv_batch, `stride` floats a row: columns
// [c0, c0 + width) of the projection, from column 0 of each row.
void fill_appended_rows(float *rows, int64_t stride, int64_t c0, int64_t width, const Geometry &g, int64_t batches,
                        int64_t kv_pos, int64_t kv_batch, bool add_bias_kv, const std::vector<float> &bias) {
    for (int64_t n = 0; n < batches; n++) {
        for (int64_t s = g.S; s < g.keys(); s++) {
            float *row = rows + (s * kv_pos + n * kv_batch) * stride;
            if (add_bias_kv && s == g.S) {
                std::memcpy(row, bias.data() + c0, (size_t)width * sizeof(float));
            } else {
                std::memset(row, 0, (size_t)width * sizeof(float));
            }
        }
    }
}

// Batch-major K or V rows with appended keys: the S real rows of each of
// `batches` batches, projected densely into `dense`, copied into place in
// `rows`, whose batches are S' rows apart (`width` floats of rows `stride`
// apart). Host or device alike (Halide's strided buffer copy).
void copy_into_batches(const DeviceViews &dv, HBuf &dense, HBuf &rows, int64_t width, int64_t stride, const Geometry &g,
                       int64_t batches) {
    HBuf from = dv.alias(dense, view(dense.data(), {{width, 1}, {g.S, stride}, {batches, g.S * stride}}));
    HBuf to = dv.alias(rows, view(rows.data(), {{width, 1}, {g.S, stride}, {batches, g.keys() * stride}}));
    check_status("copy", halide_buffer_copy(nullptr, from.raw_buffer(), dv.ks.device, to.raw_buffer()));
}

// Scratch::Auto's choice (hmha.h) for L queries and S' keys, where Sequence
// would take 2 * (L + S') * batches * E floats (batches per pass: N, or a
// chunk of them, sequence_batch_chunk). Chunked, Sequence's scratch stays
// small for any N: at (256, 128, 128, 256, 4) on 2 cores it measured 162-164
// ms in 68 MiB, PerHead (which the whole-N bytes chose) 206-265 ms in 66 MiB.
// On a GPU Auto is Sequence: PerHead there was 1.55x-6.8x slower on an H100
// (bench/results/h100-2026-11-27b.md).
bool use_per_head(Scratch policy, int64_t L, int64_t Sk, int64_t batches, int64_t E, bool gpu) {
    switch (policy) {
        case Scratch::Sequence: return false;
        case Scratch::PerHead: return true;
        case Scratch::Auto: break;
    }
    return !gpu && 2 * (L + Sk) * batches * E * (int64_t)sizeof(float) > kPerHeadAboveBytes;
}

// Batches per pass of the Sequence path (Options::batch_chunk), on the CPU
// (a GPU runs all N at once); auto_batch_chunk (batch_passes.h) when 0. A
// pass's rows must be one strided run of the caller's rows: any chunk of
// batch-major (N, L, E) rows is, of (L, N, E) rows one batch only.
int64_t sequence_batch_chunk(const Options &o, const Geometry &g, bool cpu) {
    if (!cpu || g.N <= 1) return g.N;
    const int64_t nb =
        o.batch_chunk > 0 ? o.batch_chunk : auto_batch_chunk(g.L, g.keys(), g.E, kSequenceChunkBytesPerThread);
    if (nb >= g.N) return g.N;
    return g.q_pos == 1 ? nb : 1;
}

// Columns [c0, c0 + y.dim(0).extent()) of projection p, for the rows of x.
void project_columns(const KernelSet &ks, Projection &p, int64_t c0, HBuf &x, HBuf &y) {
    if (x.dim(1).extent() == 0) return;
    const int64_t width = y.dim(0).extent();
    HBuf w = view(p.weight_t.data() + c0, {{width, 1}, {p.in, p.out}});
    HBuf b = view(p.bias.data() + c0, {{width, 1}});
    check_status("linear", ks.linear_for(x.raw_buffer(), y.raw_buffer())(x.raw_buffer(), w.raw_buffer(), b.raw_buffer(),
                                                                         y.raw_buffer()));
}

struct PerHeadCall {
    const KernelSet &ks;
    WorkspacePool &workspaces;
    Projection &q, &k, &v, &o;
    const std::vector<float> &bias_k, &bias_v;  // (E) when add_bias_kv
    const Geometry &g;
    const Options &opt;
};

// Scratch::PerHead on the CPU (hmha.h): the output tensor first holds Q, each
// head's attention then overwrites its Q in place (the CPU sdpa reads a query
// block's q only while computing that block, and writes its out after), and
// the output projection runs in place through a copy of one row block. K and V
// exist for `group` heads at a time (one head, or enough narrow heads to fill
// the projection's 64-wide column tiles): V as rows, K transposed for sdpa_kt,
// projected a block of keys at a time and transposed here, so that K is never
// held twice (as rows and as a kernel's transposed copy).
template <typename RunSdpa>
void attend_per_head(const PerHeadCall &c, const Tensor &query, const Tensor &key, const Tensor &value,
                     HBuf &out_rows, RunSdpa &&run_sdpa) {
    const Geometry &g = c.g;
    const int64_t E = g.E, H = g.H, D = g.D, L = g.L, S = g.S, N = g.N, Sk = g.keys();
    const int64_t group = std::min(H, (64 + D - 1) / D);
    // Row blocks of 128 KiB, at least 64 rows (the projection's row tile).
    const int64_t row_block = std::min(L * N, std::max<int64_t>(64, (int64_t(32) << 10) / E));
    const int64_t key_rows = std::max<int64_t>(64, (int64_t(32) << 10) / (group * D));
    // K^T rows: whole key blocks of either sdpa_kt class (causal chunks may
    // call either), plus 16 floats so that a tile's head_dim rows do not sit a
    // power of two apart (one L1 set).
    const int64_t kt_keys = c.ks.kt_padded_keys(Sk), kt_stride = kt_keys + 16;
    WorkspaceLease ws(c.workspaces, {group * D * kt_stride, Sk * group * D,
                                     std::max(row_block * E, key_rows * group * D)});
    float *kt = ws[0], *vrows = ws[1], *tmp = ws[2];
    {
        HBuf x = view(query.f32(), {{E, 1}, {L * N, E}});
        project(c.ks, c.q, x, out_rows);
    }
    HBuf heads = view(out_rows.data(), {{D, 1}, {H, D}, {L, g.q_pos * E}, {N, g.q_batch * E}});
    const int64_t kdim = c.opt.kdim, vdim = c.opt.vdim;
    for (int64_t n = 0; n < N; n++) {
        for (int64_t h0 = 0; h0 < H; h0 += group) {
            const int64_t heads_now = std::min(group, H - h0), width = heads_now * D;
            // K^T (width rows of kt_stride): blocks of keys projected into tmp, then transposed.
            for (int64_t s0 = 0; s0 < S; s0 += key_rows) {
                const int64_t rows = std::min(key_rows, S - s0);
                HBuf x = view(key.f32() + (n * g.kv_batch + s0 * g.kv_pos) * kdim,
                              {{kdim, 1}, {rows, g.kv_pos * kdim}});
                HBuf y = view(tmp, {{width, 1}, {rows, width}});
                project_columns(c.ks, c.k, h0 * D, x, y);
                for (int64_t col = 0; col < width; col++) {
                    float *dst = kt + col * kt_stride + s0;
                    for (int64_t r = 0; r < rows; r++) dst[r] = tmp[r * width + col];
                }
            }
            HBuf vx = view(value.f32() + n * g.kv_batch * vdim, {{vdim, 1}, {S, g.kv_pos * vdim}});
            HBuf vy = view(vrows, {{width, 1}, {S, width}});
            project_columns(c.ks, c.v, h0 * D, vx, vy);
            // The appended keys (bias_kv, then zero_attn's zeros), and K^T's
            // padding keys: read by the last block and hidden, zeros not garbage.
            for (int64_t s = S; s < kt_keys; s++) {
                const bool bias_row = c.opt.add_bias_kv && s == S;
                for (int64_t col = 0; col < width; col++) {
                    kt[col * kt_stride + s] = bias_row ? c.bias_k[(size_t)(h0 * D + col)] : 0.0f;
                    if (s < Sk) vrows[s * width + col] = bias_row ? c.bias_v[(size_t)(h0 * D + col)] : 0.0f;
                }
            }
            HBuf ktv = view(kt, {{kt_keys, 1}, {D, kt_stride}, {heads_now, D * kt_stride}, {1, 0}});
            HBuf vv = view(vrows, {{D, 1}, {heads_now, D}, {Sk, width}, {1, 0}});
            shift_min(ktv, 2, h0);
            shift_min(ktv, 3, n);
            shift_min(vv, 1, h0);
            shift_min(vv, 3, n);
            HBuf qv = heads.cropped(1, (int)h0, (int)heads_now).cropped(3, (int)n, 1);
            run_sdpa(qv, ktv, vv, qv, true);
        }
    }
    for (int64_t r0 = 0; r0 < L * N; r0 += row_block) {
        const int64_t rows = std::min(row_block, L * N - r0);
        std::memcpy(tmp, out_rows.data() + r0 * E, (size_t)(rows * E) * sizeof(float));
        HBuf x = view(tmp, {{E, 1}, {rows, E}});
        shift_min(x, 1, r0);
        HBuf y = out_rows.cropped(1, (int)r0, (int)rows);
        project(c.ks, c.o, x, y);
    }
}

// Device crops (Buffer::cropped) that Scratch::PerHead makes on a GPU start at
// a multiple of this many floats: OpenCL makes sub-buffers of them, whose
// origins must be multiples of CL_DEVICE_MEM_BASE_ADDR_ALIGN (128 bytes on
// NVIDIA and on PoCL, up to 256 on other GPUs), and CUDA's linear reads a
// crop of the weights as float4 (16-byte aligned).
constexpr int64_t kDeviceCropAlignFloats = 64;

// Heads per round of Scratch::PerHead on a GPU: enough to make the
// projections at least 64 features wide (as on the CPU), rounded up so that
// every round's first column (of the weights and of the output) starts a
// device crop: a multiple of kDeviceCropAlignFloats.
int64_t gpu_head_group(int64_t D, int64_t H) {
    const int64_t a = kDeviceCropAlignFloats / std::gcd(D, kDeviceCropAlignFloats);
    const int64_t wide = (64 + D - 1) / D;
    return std::min(H, (wide + a - 1) / a * a);
}

// Scratch::PerHead on a GPU (hmha.h): Q, K and V exist for one group of heads
// at a time (gpu_head_group), each group's attention is written straight into
// its columns of the output rows, and the output projection then runs in
// place, a block of rows at a time through a device copy of the block. The
// fused sdpa reads a group's queries from their own scratch: unlike on the CPU
// the output cannot hold Q, since a GPU thread may still read a query that
// another thread of its block has already overwritten with output.
// `out_rows` (E, L*N) has its device allocation.
template <typename RunSdpa>
void attend_per_head_gpu(const PerHeadCall &c, const DeviceViews &dv, const Tensor &query, const Tensor &key,
                         const Tensor &value, HBuf &out_rows, RunSdpa &&run_sdpa) {
    const Geometry &g = c.g;
    const KernelSet &ks = c.ks;
    const int64_t E = g.E, H = g.H, D = g.D, L = g.L, S = g.S, N = g.N, Sk = g.keys();
    const int64_t group = gpu_head_group(D, H), W = group * D;
    // K/V rows: (S', N) or (N, S') as the Sequence path lays them out, the
    // appended keys after each batch's real ones.
    const int64_t kv_pos = g.kv_pos == 1 ? 1 : N, kv_batch = kv_pos == 1 ? Sk : 1;
    // Batch-major with appended keys: the real rows of the batches are not one
    // run, so they are projected densely and copied into place.
    const bool per_batch = kv_pos == 1 && g.extra > 0 && N > 1;
    // The appended keys are written on the host and go up with the whole K/V
    // scratch before the projections fill in the real rows.
    WorkspaceLease ws(c.workspaces, {g.extra ? Sk * N * W : 0, g.extra ? Sk * N * W : 0});
    // The inputs' views, made once: from the host, each goes up on its first use.
    InputRows in(dv, g, c.opt, query, key, value);
    const float *none = nullptr;
    HBuf qg = dv.scratch(view(none, {{W, 1}, {L * N, W}}));
    HBuf kg = dv.scratch(view(g.extra ? ws[0] : none, {{W, 1}, {Sk * N, W}}));
    HBuf vg = dv.scratch(view(g.extra ? ws[1] : none, {{W, 1}, {Sk * N, W}}));
    HBuf dense = per_batch ? dv.scratch(view(none, {{W, 1}, {S * N, W}})) : HBuf();
    HBuf out_heads = dv.alias(out_rows, view(out_rows.data(), {{D, 1}, {H, D}, {L, g.q_pos * E}, {N, g.q_batch * E}}));
    // Columns [c0, c0 + width) of projection p for the rows of x, into y (width, rows).
    // Features numbered from 0 again: CUDA's linear wants them so (linear.cpp).
    auto project_group = [&](Projection &p, int64_t c0, int64_t width, HBuf &x, HBuf y) {
        HBuf w = p.weight_buf.cropped(0, (int)c0, (int)width), b = p.bias_buf.cropped(0, (int)c0, (int)width);
        shift_min(w, 0, -c0);
        shift_min(b, 0, -c0);
        check_status("linear", ks.linear_for(x.raw_buffer(), y.raw_buffer())(x.raw_buffer(), w.raw_buffer(),
                                                                             b.raw_buffer(), y.raw_buffer()));
    };
    for (int64_t h0 = 0; h0 < H; h0 += group) {
        const int64_t heads = std::min(group, H - h0), width = heads * D, c0 = h0 * D;
        project_group(c.q, c0, width, in.q(), qg.cropped(0, 0, (int)width));
        const std::pair<Projection *, HBuf *> kv[] = {{&c.k, &kg}, {&c.v, &vg}};
        for (const auto &[p, rows] : kv) {
            HBuf &x = p == &c.k ? in.k() : in.v();
            if (g.extra) {
                fill_appended_rows(rows->data(), W, c0, width, g, N, kv_pos, kv_batch, c.opt.add_bias_kv,
                                   p == &c.k ? c.bias_k : c.bias_v);
                rows->set_host_dirty();
                check_status("copy_to_device", rows->copy_to_device(ks.device));
            }
            if (S == 0) continue;
            if (!per_batch) {
                project_group(*p, c0, width, x, rows->cropped(0, 0, (int)width).cropped(1, 0, (int)(S * N)));
                continue;
            }
            project_group(*p, c0, width, x, dense.cropped(0, 0, (int)width));
            copy_into_batches(dv, dense, *rows, width, W, g, N);
        }
        HBuf qv = dv.alias(qg, view(none, {{D, 1}, {heads, D}, {L, g.q_pos * W}, {N, g.q_batch * W}}));
        HBuf kv_heads = dv.alias(kg, view(kg.data(), {{D, 1}, {heads, D}, {Sk, kv_pos * W}, {N, kv_batch * W}}));
        HBuf vv_heads = dv.alias(vg, view(vg.data(), {{D, 1}, {heads, D}, {Sk, kv_pos * W}, {N, kv_batch * W}}));
        for (HBuf *b : {&qv, &kv_heads, &vv_heads}) shift_min(*b, 1, h0);
        HBuf ov = out_heads.cropped(1, (int)h0, (int)heads);
        run_sdpa(qv, kv_heads, vv_heads, ov, false);
    }
    // The in-place output projection copies a block of rows at a time into
    // the Q scratch, free by now: W/E of the rows (all of them when one
    // group holds every head), rounded down to a multiple of
    // kDeviceCropAlignFloats rows (each block's crop of the output then starts
    // aligned); a scratch of that many rows where Q's holds fewer.
    const int64_t align = kDeviceCropAlignFloats;
    const int64_t fit = L * N * W / E;
    const int64_t row_block = fit >= L * N ? L * N : std::min(L * N, std::max(align, fit / align * align));
    HBuf block = row_block * E <= L * N * W ? dv.alias(qg, view(none, {{E, 1}, {row_block, E}}))
                                            : dv.scratch(view(none, {{E, 1}, {row_block, E}}));
    for (int64_t r0 = 0; r0 < L * N; r0 += row_block) {
        const int64_t rows = std::min(row_block, L * N - r0);
        HBuf x = block.cropped(1, 0, (int)rows);
        shift_min(x, 1, r0);
        check_status("copy", halide_buffer_copy(nullptr, out_rows.raw_buffer(), ks.device, x.raw_buffer()));
        HBuf y = out_rows.cropped(1, (int)r0, (int)rows);
        project(ks, c.o, x, y);
    }
    out_rows.set_device_dirty();
}

}  // namespace

ForwardResult MultiheadAttention::forward(const Tensor &query, const Tensor &key, const Tensor &value,
                                          const ForwardOptions &f) const {
    const Impl &m = *impl_;
    const Options &o = m.opt;
    for (const auto &[mask, name] : {std::pair{&f.key_padding_mask, "key_padding_mask"},
                                     std::pair{&f.attn_mask, "attn_mask"}}) {
        if (*mask && (*mask)->dtype() != DType::F32 && (*mask)->dtype() != DType::Bool) {
            throw Error(std::string(name) + ": expected dtype bool or float32, got " + to_string((*mask)->dtype()));
        }
    }
    const Geometry g = validate_inputs(o, query, key, value, f);
    detail::device_scratch_bytes = 0;
    const int64_t E = g.E, H = g.H, D = g.D, L = g.L, S = g.S, N = g.N, Sk = g.keys();

    const KernelSet &ks = *m.kernels;
    const detail::KernelTraceScope trace(ks.device);
    const DeviceViews dv{ks, {}};
    // Outputs live where the query does: on the host, or on the module's device
    // (then owned by the returned Tensor through device_owner_).
    const bool device_out = query.device() != Device::CPU;
    std::vector<std::shared_ptr<HBuf>> owners;
    auto make_output = [&](const std::vector<int64_t> &shape) {
        if (!device_out) return Tensor::uninitialized(shape);
        int64_t n = 1;
        for (int64_t e : shape) n *= e;
        auto owner = std::make_shared<HBuf>(view(static_cast<const float *>(nullptr), {{std::max<int64_t>(n, 1), 1}}));
        check_status("device_malloc", owner->device_malloc(ks.device));
        Tensor t = Tensor::wrap_device(o.device, ks.native_handle(nullptr, owner->raw_buffer()), shape);
        t.device_owner_ = owner;
        owners.push_back(owner);
        return t;
    };
    // A kernel's view of (part of) output tensor t.
    auto output_view = [&](Tensor &t, std::initializer_list<std::pair<int64_t, int64_t>> extent_stride) {
        if (!device_out) return view(t.f32(), extent_stride);
        HBuf &owner = *std::static_pointer_cast<HBuf>(t.device_owner_);
        return dv.alias(owner, view(static_cast<const float *>(nullptr), extent_stride));
    };
    auto finish_output = [&](HBuf &b) {
        if (!device_out) dv.to_host(b);
    };

    ForwardResult result;
    const std::vector<int64_t> out_shape = g.batched ? (o.batch_first ? std::vector<int64_t>{N, L, E}
                                                                      : std::vector<int64_t>{L, N, E})
                                                     : std::vector<int64_t>{L, E};
    result.attn_output = make_output(out_shape);
    if (f.need_weights) {
        std::vector<int64_t> ws = f.average_attn_weights ? std::vector<int64_t>{N, L, Sk}
                                                         : std::vector<int64_t>{N, H, L, Sk};
        Tensor w = make_output(ws);
        if (!g.batched) ws.erase(ws.begin());
        result.attn_output_weights = w.reshape(ws);
    }
    if (L == 0 || N == 0) return result;

    // Masks as (S, L, H, N) / (S, N) views; absent ones are zero-stride views of
    // one zero row. Bool key padding becomes an additive 0 / -inf row per batch.
    const int64_t Sm = std::max<int64_t>(S, 1);
    const auto zeros_f = m.zero_rows.get<float>(ks, Sm);
    auto am_f = dv.zeros(zeros_f, {{Sm, 1}, {L, 0}, {H, 0}, {N, 0}});
    auto am_b = dv.zeros(m.zero_rows.get<uint8_t>(ks, Sm), {{Sm, 1}, {L, 0}, {H, 0}, {N, 0}});
    if (f.attn_mask && S > 0) {
        const Tensor &a = *f.attn_mask;
        int64_t hs = a.dim() == 3 ? L * S : 0, ns = a.dim() == 3 ? H * L * S : 0;
        if (a.dtype() == DType::F32) {
            am_f = dv.input<float>(a, {{S, 1}, {L, S}, {H, hs}, {N, ns}});
        } else {
            am_b = dv.input<uint8_t>(a, {{S, 1}, {L, S}, {H, hs}, {N, ns}});
        }
    }
    std::vector<float> kpm_storage;
    auto kpm = dv.zeros(zeros_f, {{Sm, 1}, {N, 0}});
    if (f.key_padding_mask && S > 0) {
        const Tensor &k = *f.key_padding_mask;
        if (k.dtype() == DType::F32) {
            kpm = dv.input<float>(k, {{S, 1}, {N, S}});
        } else {
            // N*S bytes: converted on the host (a device mask is copied down first).
            const Tensor host = k.to_host();
            kpm_storage.resize((size_t)(N * S));
            const float inf = std::numeric_limits<float>::infinity();
            for (size_t i = 0; i < kpm_storage.size(); i++) kpm_storage[i] = host.bytes()[i] ? -inf : 0.0f;
            kpm = dv.input(view(kpm_storage.data(), {{S, 1}, {N, S}}));
        }
    }
    const float scale = (float)std::sqrt(1.0 / (double)D);
    const int masked_keys = (int)S;
    const bool has_masks = (f.attn_mask || f.key_padding_mask) && S > 0;

    // The fused attention of q (D, H, L, N) views into out. Causal without
    // appended keys: query chunk [i0, i1) sees keys [0, i1) only, so each chunk
    // runs on a cropped K/V and the hidden upper-right blocks are never
    // computed. Crops keep absolute coordinates (Halide buffer mins), so the
    // kernel's causal test and mask indexing are unchanged.
    // K^T (keys_transposed, sdpa_kt classes) is cropped to whole key blocks.
    // Not on a GPU: a 256-query launch fills a few dozen blocks of the chip
    // (measured on an H100 at L = 4096, H = 8: 106 ms chunked, 3.5x the
    // unchunked non-causal call), so there one launch masks the hidden keys.
    // The need_weights path below chunks its queries the same way.
    const bool causal_chunks = f.is_causal && g.extra == 0 && ks.device == nullptr;
    // The keys that queries [i0, i0 + rows) may see (Sk = S when causal_chunks).
    auto visible_keys = [&](int64_t i0, int64_t rows) { return causal_chunks ? std::min(Sk, i0 + rows) : Sk; };
    auto run_sdpa = [&](HBuf &qv, HBuf &kv, HBuf &vv, HBuf &out, bool keys_transposed) {
        const int64_t chunk = causal_chunks ? kCausalQueryChunk : L;
        for (int64_t i0 = 0; i0 < L; i0 += chunk) {
            const int64_t rows = std::min(chunk, L - i0);
            const int64_t keys = visible_keys(i0, rows);  // >= 1 here
            auto qc = qv.cropped(2, (int)i0, (int)rows), oc = out.cropped(2, (int)i0, (int)rows);
            auto vc = vv.cropped(2, 0, (int)keys);
            auto sdpa = ks.sdpa_for(keys, rows, vc.dim(2).stride());
            HBuf kc;
            if (keys_transposed) {
                const KernelSet::KtClass kt = ks.kt_for(keys);
                sdpa = kt.sdpa;
                kc = kv.cropped(0, 0, (int)kt.padded_keys);
            } else {
                kc = kv.cropped(2, 0, (int)keys);
            }
            check_status("sdpa", sdpa(qc.raw_buffer(), kc.raw_buffer(), vc.raw_buffer(), am_f.raw_buffer(),
                                         am_b.raw_buffer(), kpm.raw_buffer(), masked_keys, f.is_causal, has_masks,
                                         scale, oc.raw_buffer()));
        }
    };
    // Batches per pass of the Sequence path below (sequence_batch_chunk): all
    // N, or on the CPU a chunk (one batch with (L, N, E) rows) whose
    // projections, attention and output projection run before the next
    // chunk's, so that its scratch stays in cache.
    const int64_t NB = sequence_batch_chunk(o, g, ks.device == nullptr);
    // need_weights=false runs the fused sdpa, except on a GPU for heads wider
    // than its shared memory holds or when Options::gpu_attention asks for the
    // unfused path, which then keeps its per-head weights in chunk scratch, as
    // when averaging.
    const bool fused = !f.need_weights && !(ks.device && (D > kGpuFusedMaxHeadDim ||
                                                          o.gpu_attention == GpuAttention::Unfused));
    if (fused && Sk > 0 && use_per_head(o.scratch, L, Sk, NB, E, ks.device != nullptr)) {
        const PerHeadCall call{ks, *m.workspaces, m.q, m.k, m.v, m.o, m.bias_k, m.bias_v, g, o};
        if (ks.device) {
            HBuf out_rows = device_out ? output_view(result.attn_output, {{E, 1}, {L * N, E}})
                                       : dv.scratch(view(result.attn_output.f32(), {{E, 1}, {L * N, E}}));
            attend_per_head_gpu(call, dv, query, key, value, out_rows, run_sdpa);
            finish_output(out_rows);
            return result;
        }
        if (ks.sdpa_kt) {
            HBuf out_rows = view(result.attn_output.f32(), {{E, 1}, {L * N, E}});
            attend_per_head(call, query, key, value, out_rows, run_sdpa);
            return result;
        }
    }

    // Projections. q and the attention output keep the caller's row order; keys
    // and values are laid out as (S', N, E) or (N, S', E) so that the appended
    // positions (bias_kv, zero_attn) follow the real ones.
    // Scratch comes from a workspace kept by the module: fresh allocations would
    // page-fault on every call (measured: a third of the forward at N=4, L=512).
    // Every element is written by a kernel, except the appended key/value rows,
    // which are filled below.
    const bool averaged = f.need_weights && f.average_attn_weights;
    // Averaging on the CPU, softmax_attend_mean writes the mean alone: no
    // per-head weights, no scratch for them.
    const bool mean_fused = averaged && ks.softmax_attend_mean != nullptr;
    const bool weights_scratch = (averaged && !mean_fused) || (!f.need_weights && !fused);
    // Passes of NB batches (chunked: NB < N, on the CPU only). Unchunked, the
    // scratch rows keep the caller's order; chunked, a pass's rows are
    // batch-major. The rows of every pass start at row 0 of its scratch, its
    // input and its output views; only the head views, which the attention
    // kernels index masks and weights with, are moved to the pass's batches.
    const bool chunked = NB < N;
    const int64_t q_pos = chunked ? 1 : g.q_pos, q_batch = chunked ? L : g.q_batch;  // in rows
    const int64_t kv_pos = chunked || g.kv_pos == 1 ? 1 : N, kv_batch = kv_pos == 1 ? Sk : 1;
    // Batch-major keys with appended rows: (N, S', E) rows are not one run of the
    // input's (N, S, E) rows, so K and V are projected into a dense (N, S, E)
    // scratch and copied into place with Halide's strided buffer copy (host or
    // device alike). One batch at a time, its S rows come first.
    const bool per_batch = kv_pos == 1 && Sk != S && S > 0 && NB > 1;
    const int64_t query_chunk = std::min(L, kWeightsQueryChunk);  // need_weights' query chunks, see below
    WorkspaceLease ws(*m.workspaces, {L * NB * E, L * NB * E, Sk * NB * E, Sk * NB * E,
                                      weights_scratch ? NB * H * query_chunk * Sk : 0,
                                      per_batch ? S * NB * E : 0, per_batch ? S * NB * E : 0});
    float *qp = ws[0], *attn = ws[1], *kp = ws[2], *vp = ws[3], *per_head_scratch = ws[4];
    // Rows of a host sequence tensor (len positions of `width` floats) for the
    // batches [n0, n0 + nb) of a chunked pass: one run of rows when batch-major,
    // else (sequence_batch_chunk makes such passes one batch) rows N * width apart.
    auto pass_rows = [&](const float *data, int64_t len, int64_t width, int64_t n0, int64_t nb) {
        const bool batch_major = g.q_pos == 1;
        return view(data + n0 * (batch_major ? len : 1) * width,
                    {{width, 1}, {len * nb, batch_major ? width : N * width}});
    };
    // Whole-output weights: the per-head ones (need_weights without averaging)
    // or their mean.
    const HBuf per_head_out =
        f.need_weights && !averaged
            ? output_view(*result.attn_output_weights, {{Sk, 1}, {L, Sk}, {H, L * Sk}, {N, H * L * Sk}})
            : HBuf();
    const HBuf mean_out = averaged ? output_view(*result.attn_output_weights, {{Sk, 1}, {L, Sk}, {N, L * Sk}}) : HBuf();

    for (int64_t n0 = 0; n0 < N; n0 += NB) {
        const int64_t nb = std::min(NB, N - n0), kv_rows = Sk * nb;
        HBuf q_rows = dv.scratch(view(qp, {{E, 1}, {L * nb, E}}));
        HBuf attn_rows = dv.scratch(view(attn, {{E, 1}, {L * nb, E}}));
        HBuf k_rows = dv.scratch(view(kp, {{E, 1}, {kv_rows, E}}));
        HBuf v_rows = dv.scratch(view(vp, {{E, 1}, {kv_rows, E}}));

        // Appended rows (bias_k/bias_v, then zero_attn's zeros) are written on the
        // host first; on a GPU the whole scratch then goes up once, before the
        // projections fill in the real rows on the device.
        fill_appended_rows(kp, E, 0, E, g, nb, kv_pos, kv_batch, o.add_bias_kv, m.bias_k);
        fill_appended_rows(vp, E, 0, E, g, nb, kv_pos, kv_batch, o.add_bias_kv, m.bias_v);
        if (ks.device && Sk > S) {
            for (HBuf *rows : {&k_rows, &v_rows}) {
                rows->set_host_dirty();
                check_status("copy_to_device", rows->copy_to_device(ks.device));
            }
        }
        // Unchunked: views of the whole inputs (one pass); chunked (CPU), this pass's rows.
        std::optional<InputRows> whole;
        if (!chunked) whole.emplace(dv, g, o, query, key, value);
        {
            HBuf x = chunked ? pass_rows(query.f32(), L, E, n0, nb) : HBuf();
            project(ks, m.q, chunked ? x : whole->q(), q_rows);
        }
        if (S > 0) {
            HBuf kx_pass = chunked ? pass_rows(key.f32(), S, o.kdim, n0, nb) : HBuf();
            HBuf vx_pass = chunked ? pass_rows(value.f32(), S, o.vdim, n0, nb) : HBuf();
            HBuf &kx = chunked ? kx_pass : whole->k(), &vx = chunked ? vx_pass : whole->v();
            if (!per_batch) {
                HBuf ky = k_rows.cropped(1, 0, (int)(S * nb)), vy = v_rows.cropped(1, 0, (int)(S * nb));
                project(ks, m.k, kx, ky);
                project(ks, m.v, vx, vy);
            } else {
                const std::pair<HBuf *, float *> kv_scratch[] = {{&k_rows, ws[5]}, {&v_rows, ws[6]}};
                for (const auto &[rows, dense] : kv_scratch) {
                    HBuf y = dv.scratch(view(dense, {{E, 1}, {S * nb, E}}));
                    project(ks, rows == &k_rows ? m.k : m.v, rows == &k_rows ? kx : vx, y);
                    copy_into_batches(dv, y, *rows, E, E, g, nb);
                }
            }
        }

        // Head views (D, H, L|S', N) of the projected rows, at the pass's batches.
        HBuf qv = dv.alias(q_rows, view(qp, {{D, 1}, {H, D}, {L, q_pos * E}, {nb, q_batch * E}}));
        HBuf av = dv.alias(attn_rows, view(attn, {{D, 1}, {H, D}, {L, q_pos * E}, {nb, q_batch * E}}));
        HBuf kv = dv.alias(k_rows, view(kp, {{D, 1}, {H, D}, {Sk, kv_pos * E}, {nb, kv_batch * E}}));
        HBuf vv = dv.alias(v_rows, view(vp, {{D, 1}, {H, D}, {Sk, kv_pos * E}, {nb, kv_batch * E}}));
        for (HBuf *b : {&qv, &av, &kv, &vv}) shift_min(*b, 3, n0);

        if (Sk == 0) {
            // Every row is fully hidden: weights 0 (already), attention rows 0.
            std::fill(attn, attn + L * nb * E, 0.0f);
            attn_rows = dv.input(std::move(attn_rows));
        } else if (fused) {
            run_sdpa(qv, kv, vv, av, false);
        } else {
            // Query chunks, so that the per-head weights a chunk writes are still in
            // cache when attend (and head_mean) read them back; when averaging they
            // are scratch of nb*H*query_chunk*S' floats only (none on the CPU, where
            // softmax_attend_mean keeps them in cache). Crops keep absolute coordinates.
            HBuf per_head_all;
            if (weights_scratch) {
                per_head_all = dv.scratch(
                    view(per_head_scratch,
                         {{Sk, 1}, {query_chunk, Sk}, {H, query_chunk * Sk}, {nb, H * query_chunk * Sk}}));
                shift_min(per_head_all, 3, n0);
            } else if (!mean_fused) {
                per_head_all = chunked ? per_head_out.cropped(3, (int)n0, (int)nb) : per_head_out;
            }
            HBuf mean_all = chunked && averaged ? mean_out.cropped(2, (int)n0, (int)nb) : mean_out;
            // causal_chunks (on the CPU: host weights): a chunk [i0, i1) runs
            // on the keys [0, i1) it may see, cropped (absolute coordinates, as
            // run_sdpa's chunks), and the rest of its weight rows, all hidden,
            // is zeroed here instead of computed.
            const int64_t chunk = causal_chunks ? kCausalQueryChunk : query_chunk;
            for (int64_t i0 = 0; i0 < L; i0 += chunk) {
                const int64_t rows = std::min(chunk, L - i0);
                const int64_t keys = visible_keys(i0, rows);
                auto qc = qv.cropped(2, (int)i0, (int)rows), ac = av.cropped(2, (int)i0, (int)rows);
                HBuf kc = kv.cropped(2, 0, (int)keys), vc = vv.cropped(2, 0, (int)keys);
                // The weights of the visible keys, after zeroing the hidden rest.
                auto visible = [&](HBuf &w) {
                    if (keys < Sk) w.cropped(0, (int)keys, (int)(Sk - keys)).fill(0.0f);
                    return w.cropped(0, 0, (int)keys);
                };
                if (mean_fused) {
                    HBuf mc = mean_all.cropped(1, (int)i0, (int)rows);
                    HBuf mk = visible(mc);
                    check_status("softmax_attend_mean",
                                 ks.softmax_attend_mean_for(keys, rows, vc.dim(2).stride())(
                                     qc.raw_buffer(), kc.raw_buffer(), vc.raw_buffer(), am_f.raw_buffer(),
                                     am_b.raw_buffer(), kpm.raw_buffer(), masked_keys, f.is_causal, has_masks, scale,
                                     mk.raw_buffer(), ac.raw_buffer()));
                    finish_output(mc);
                    continue;
                }
                HBuf wv = per_head_all.cropped(1, weights_scratch ? 0 : (int)i0, (int)rows);
                if (weights_scratch) shift_min(wv, 1, i0);
                if (ks.softmax_attend) {
                    HBuf wk = visible(wv);
                    check_status("softmax_attend",
                                 ks.softmax_attend_for(keys, rows, vc.dim(2).stride())(
                                     qc.raw_buffer(), kc.raw_buffer(), vc.raw_buffer(), am_f.raw_buffer(),
                                     am_b.raw_buffer(), kpm.raw_buffer(), masked_keys, f.is_causal, has_masks, scale,
                                     wk.raw_buffer(), ac.raw_buffer()));
                } else {
                    check_status("masked_softmax",
                                 ks.masked_softmax(qc.raw_buffer(), kv.raw_buffer(), am_f.raw_buffer(),
                                                   am_b.raw_buffer(), kpm.raw_buffer(), masked_keys, f.is_causal,
                                                   has_masks, scale, wv.raw_buffer()));
                    check_status("attend", ks.attend(wv.raw_buffer(), vv.raw_buffer(), ac.raw_buffer()));
                }
                if (averaged) {
                    HBuf mc = mean_all.cropped(1, (int)i0, (int)rows);
                    check_status("head_mean", ks.head_mean(wv.raw_buffer(), mc.raw_buffer()));
                    finish_output(mc);
                } else if (f.need_weights) {
                    finish_output(wv);
                }
            }
        }
        HBuf out = chunked ? pass_rows(result.attn_output.f32(), L, E, n0, nb)
                           : output_view(result.attn_output, {{E, 1}, {L * N, E}});
        project(ks, m.o, attn_rows, out);
        finish_output(out);
    }
    return result;
}

}  // namespace hmha
