// Tensors that already live on the device (Tensor::wrap_device): forward reads
// them in place and returns outputs on the device when the query is there.
// Runs only in the per-device suites (tag [device]); device memory is made
// with Halide's runtime, as an app would with cudaMalloc or clCreateBuffer.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "HalideBuffer.h"
#include "HalideRuntimeCuda.h"
#include "HalideRuntimeOpenCL.h"
#include "device.h"
#include "hmha/hmha.h"

namespace hmha::detail {
// runtime/src/mha.cpp: device scratch bytes of this thread's last forward().
int64_t last_forward_device_scratch_bytes();
}  // namespace hmha::detail

namespace {

// The GPU families this build has (HMHA_HAVE_OPENCL / HMHA_HAVE_CUDA, from
// HMHA_TARGETS): the device suites run only for those.
const halide_device_interface_t *interface_of(hmha::Device d) {
#if HMHA_HAVE_CUDA
    if (d == hmha::Device::CUDA) return halide_cuda_device_interface();
#endif
#if HMHA_HAVE_OPENCL
    if (d == hmha::Device::OpenCL) return halide_opencl_device_interface();
#endif
    FAIL("this build has no " << hmha::to_string(d) << " kernels");
    return nullptr;
}

uint64_t native_handle_of(hmha::Device d, halide_buffer_t *b) {
#if HMHA_HAVE_CUDA
    if (d == hmha::Device::CUDA) return halide_cuda_get_device_ptr(nullptr, b);
#endif
#if HMHA_HAVE_OPENCL
    if (d == hmha::Device::OpenCL) return halide_opencl_get_cl_mem(nullptr, b);
#endif
    FAIL("this build has no " << hmha::to_string(d) << " kernels");
    return 0;
}

// A device copy of a host tensor, kept alive by `keep`.
hmha::Tensor upload(const hmha::Tensor &host, std::vector<std::shared_ptr<Halide::Runtime::Buffer<uint8_t>>> &keep) {
    const hmha::Device d = test_device();
    auto b =
        std::make_shared<Halide::Runtime::Buffer<uint8_t>>(const_cast<uint8_t *>(host.bytes()), (int)host.nbytes());
    b->set_host_dirty();
    REQUIRE(b->copy_to_device(interface_of(d)) == 0);
    keep.push_back(b);
    return hmha::Tensor::wrap_device(d, native_handle_of(d, b->raw_buffer()), host.shape(), host.dtype());
}

// A host copy made through the tensor's native handle alone, as other code
// that reads device outputs would (not Tensor::to_host).
hmha::Tensor read_in_place(const hmha::Tensor &dev) {
    hmha::Tensor host(dev.shape());
    Halide::Runtime::Buffer<uint8_t> b(host.bytes(), (int)host.nbytes());
    REQUIRE(b.device_wrap_native(interface_of(test_device()), dev.native_handle()) == 0);
    b.set_device_dirty();
    REQUIRE(b.copy_to_host() == 0);
    REQUIRE(b.device_detach_native() == 0);
    return host;
}

hmha::Tensor random_tensor(std::vector<int64_t> shape, std::mt19937 &rng, float scale = 1.0f) {
    hmha::Tensor t(std::move(shape));
    std::normal_distribution<float> nd(0.0f, scale);
    for (int64_t i = 0; i < t.numel(); i++) t.f32()[i] = nd(rng);
    return t;
}

void require_equal(const hmha::Tensor &a, const hmha::Tensor &b) {
    REQUIRE(a.device() == hmha::Device::CPU);
    REQUIRE(a.shape() == b.shape());
    for (int64_t i = 0; i < a.numel(); i++) {
        INFO("element " << i);
        REQUIRE(a.f32()[i] == b.f32()[i]);
    }
}

struct Module {
    hmha::MultiheadAttention mha;
    static Module make(int64_t E, int64_t H, bool add_bias_kv, std::mt19937 &rng,
                       hmha::Scratch scratch = hmha::Scratch::Auto) {
        std::map<std::string, hmha::Tensor> sd{{"in_proj_weight", random_tensor({3 * E, E}, rng, 0.3f)},
                                               {"in_proj_bias", random_tensor({3 * E}, rng, 0.1f)},
                                               {"out_proj.weight", random_tensor({E, E}, rng, 0.3f)},
                                               {"out_proj.bias", random_tensor({E}, rng, 0.1f)}};
        hmha::Options o;
        o.embed_dim = E;
        o.num_heads = H;
        o.batch_first = true;
        o.add_bias_kv = add_bias_kv;
        o.device = test_device();
        o.scratch = scratch;
        if (add_bias_kv) {
            sd["bias_k"] = random_tensor({1, 1, E}, rng);
            sd["bias_v"] = random_tensor({1, 1, E}, rng);
        }
        return Module{hmha::MultiheadAttention(o, sd)};
    }
};

}  // namespace

// Scratch::PerHead too: on a GPU its attention goes into column crops of the
// output tensor, here the caller's device memory (two rounds of one 64-wide head).
TEST_CASE("device tensors: inputs on the device give the host path's outputs on the device", "[device]") {
    REQUIRE(test_device() != hmha::Device::CPU);
    std::mt19937 rng(7);
    const int64_t N = 2, L = 5, S = 7;
    for (const auto &[E, H, scratch] : {std::tuple{int64_t(12), int64_t(3), hmha::Scratch::Auto},
                                        std::tuple{int64_t(128), int64_t(2), hmha::Scratch::PerHead}})
        for (bool need_weights : {false, true}) {
            for (bool average : {true, false}) {
                for (bool bias_kv : {false, true}) {
                    INFO("need_weights=" << need_weights << " average=" << average << " add_bias_kv=" << bias_kv
                                         << " scratch=" << hmha::to_string(scratch));
                    Module m = Module::make(E, H, bias_kv, rng, scratch);
                    hmha::Tensor q = random_tensor({N, L, E}, rng), k = random_tensor({N, S, E}, rng),
                                 v = random_tensor({N, S, E}, rng), am = random_tensor({L, S}, rng);
                    hmha::Tensor kpm = hmha::Tensor::from_bools({N, S}, {0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1});
                    hmha::ForwardOptions host_f;
                    host_f.need_weights = need_weights;
                    host_f.average_attn_weights = average;
                    host_f.attn_mask = am;
                    host_f.key_padding_mask = kpm;
                    const hmha::ForwardResult want = m.mha.forward(q, k, v, host_f);

                    std::vector<std::shared_ptr<Halide::Runtime::Buffer<uint8_t>>> keep;
                    hmha::ForwardOptions dev_f = host_f;
                    dev_f.attn_mask = upload(am, keep);
                    dev_f.key_padding_mask = upload(kpm, keep);
                    const hmha::ForwardResult got =
                        m.mha.forward(upload(q, keep), upload(k, keep), upload(v, keep), dev_f);
                    REQUIRE(got.attn_output.device() == test_device());
                    REQUIRE(got.attn_output.f32() == nullptr);
                    REQUIRE(got.attn_output.native_handle() != 0);
                    // What an app does with a device output: wait, then read it in place.
                    hmha::synchronize(test_device());
                    require_equal(read_in_place(got.attn_output), want.attn_output);
                    require_equal(got.attn_output.to_host(), want.attn_output);
                    REQUIRE(got.attn_output_weights.has_value() == need_weights);
                    if (need_weights) {
                        REQUIRE(got.attn_output_weights->device() == test_device());
                        require_equal(got.attn_output_weights->to_host(), *want.attn_output_weights);
                    }
                }
            }
        }
}

TEST_CASE("device tensors: a host query with device keys and values returns host outputs", "[device]") {
    REQUIRE(test_device() != hmha::Device::CPU);
    std::mt19937 rng(8);
    Module m = Module::make(8, 2, false, rng);
    hmha::Tensor q = random_tensor({3, 4, 8}, rng), kv = random_tensor({3, 6, 8}, rng);
    const hmha::ForwardResult want = m.mha.forward(q, kv, kv);
    std::vector<std::shared_ptr<Halide::Runtime::Buffer<uint8_t>>> keep;
    hmha::Tensor kv_dev = upload(kv, keep);
    const hmha::ForwardResult got = m.mha.forward(q, kv_dev, kv_dev);
    require_equal(got.attn_output, want.attn_output);
    require_equal(*got.attn_output_weights, *want.attn_output_weights);
}

// The projections read x's rows as float4 (linear_vector_x) only where they
// are 16-byte aligned: a CUDA query one float past an aligned address takes the
// scalar linear instead of faulting (OpenCL buffers cannot start there: a
// cl_mem or sub-buffer origin is at least 128-byte aligned).
TEST_CASE("device tensors: a CUDA query 4 bytes past an aligned address gives the host path's outputs", "[device]") {
    REQUIRE(test_device() != hmha::Device::CPU);
    if (test_device() != hmha::Device::CUDA) {
        WARN("skipped on " << hmha::to_string(test_device()) << ": CUDA device addresses only");
        return;
    }
    std::mt19937 rng(9);
    const int64_t E = 16, N = 2, L = 5, S = 7;  // k = 16: the vector class would take an aligned query
    Module m = Module::make(E, 2, false, rng);
    hmha::Tensor q = random_tensor({N, L, E}, rng), kv = random_tensor({N, S, E}, rng);
    hmha::ForwardOptions f;
    f.need_weights = false;
    const hmha::ForwardResult want = m.mha.forward(q, kv, kv, f);
    // q's floats one float into a device allocation.
    Halide::Runtime::Buffer<float> shifted((int)q.numel() + 1);
    std::copy(q.f32(), q.f32() + q.numel(), shifted.data() + 1);
    shifted.set_host_dirty();
    REQUIRE(shifted.copy_to_device(interface_of(hmha::Device::CUDA)) == 0);
    const uint64_t at = native_handle_of(hmha::Device::CUDA, shifted.raw_buffer()) + sizeof(float);
    REQUIRE(at % 16 != 0);
    std::vector<std::shared_ptr<Halide::Runtime::Buffer<uint8_t>>> keep;
    const hmha::Tensor kv_dev = upload(kv, keep);
    const hmha::ForwardResult got =
        m.mha.forward(hmha::Tensor::wrap_device(hmha::Device::CUDA, at, q.shape(), q.dtype()), kv_dev, kv_dev, f);
    const hmha::Tensor out = got.attn_output.to_host();
    REQUIRE(out.shape() == want.attn_output.shape());
    for (int64_t i = 0; i < out.numel(); i++) {
        INFO("element " << i);
        REQUIRE(std::fabs(out.f32()[i] - want.attn_output.f32()[i]) <= 1e-5f * (1.0f + std::fabs(want.attn_output.f32()[i])));
    }
}

TEST_CASE("device tensors: Tensor::to_device makes an owning device copy", "[device]") {
    REQUIRE(test_device() != hmha::Device::CPU);
    std::mt19937 rng(9);
    Module m = Module::make(12, 3, false, rng);
    hmha::Tensor q = random_tensor({2, 5, 12}, rng), kv = random_tensor({2, 7, 12}, rng);
    const hmha::ForwardResult want = m.mha.forward(q, kv, kv);

    hmha::Tensor q_dev = q.to_device(test_device());
    hmha::Tensor kv_dev = kv.to_device(test_device());
    REQUIRE(q_dev.device() == test_device());
    REQUIRE(q_dev.f32() == nullptr);
    REQUIRE(q_dev.native_handle() != 0);
    REQUIRE(q_dev.shape() == q.shape());
    // The copy owns its memory: the host tensors may go away.
    const hmha::Tensor q_host = q, kv_host = kv;
    q = hmha::Tensor();
    kv = hmha::Tensor();
    require_equal(read_in_place(q_dev), q_host);
    require_equal(kv_dev.to_host(), kv_host);
    REQUIRE(q_dev.to_device(test_device()).native_handle() == q_dev.native_handle());
    require_equal(q_dev.to_device(hmha::Device::CPU), q_host);

    const hmha::ForwardResult got = m.mha.forward(q_dev, kv_dev, kv_dev);
    require_equal(got.attn_output.to_host(), want.attn_output);
    require_equal(got.attn_output_weights->to_host(), *want.attn_output_weights);

    // Bool masks and empty tensors go up too.
    const hmha::Tensor kpm = hmha::Tensor::from_bools({2, 7}, {0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0});
    const hmha::Tensor kpm_dev = kpm.to_device(test_device());
    REQUIRE(kpm_dev.dtype() == hmha::DType::Bool);
    const hmha::Tensor kpm_back = kpm_dev.to_host();
    for (int64_t i = 0; i < kpm.numel(); i++) REQUIRE(kpm_back.bytes()[i] == kpm.bytes()[i]);
    const hmha::Tensor empty = hmha::Tensor({0, 4}).to_device(test_device());
    REQUIRE(empty.device() == test_device());
    REQUIRE(empty.numel() == 0);
}

// The memory of need_weights=false on a device (issue 4's target: within 1.2x
// of inputs + outputs + parameters at L = S = 8192): Scratch::Sequence holds
// Q, K, V and the attention output (4 x L x E floats for self-attention),
// Scratch::PerHead one 64-wide head group of Q, K and V (3 x L x 64), whose Q
// the in-place output projection then reuses for its row blocks. Counted by the
// runtime's device allocations (PoCL's device memory is host memory with its
// own overhead, so the process's peak would not show it); outputs on the
// device are the result's, not scratch. The two outputs agree.
TEST_CASE("device tensors: Scratch::PerHead holds a head group of device scratch, Sequence four tensors", "[device]") {
    REQUIRE(test_device() != hmha::Device::CPU);
    std::mt19937 rng(9);
    const int64_t L = 1024, E = 512, H = 8;
    std::vector<std::shared_ptr<Halide::Runtime::Buffer<uint8_t>>> keep;
    const hmha::Tensor x = upload(random_tensor({1, L, E}, rng), keep);
    hmha::ForwardOptions f;
    f.need_weights = false;
    std::map<hmha::Scratch, std::pair<int64_t, hmha::Tensor>> got;
    for (hmha::Scratch scratch : {hmha::Scratch::Sequence, hmha::Scratch::PerHead}) {
        std::mt19937 same_weights(10);
        Module m = Module::make(E, H, false, same_weights, scratch);
        const hmha::ForwardResult r = m.mha.forward(x, x, x, f);
        got[scratch] = {hmha::detail::last_forward_device_scratch_bytes(), r.attn_output.to_host()};
    }
    const int64_t f32 = sizeof(float);
    const int64_t sequence = got[hmha::Scratch::Sequence].first, per_head = got[hmha::Scratch::PerHead].first;
    INFO("device scratch: Sequence " << sequence << " bytes, PerHead " << per_head);
    CHECK(sequence >= 4 * L * E * f32);
    CHECK(per_head <= 3 * L * 64 * f32);
    CHECK(per_head > 0);
    const hmha::Tensor &a = got[hmha::Scratch::Sequence].second, &b = got[hmha::Scratch::PerHead].second;
    REQUIRE(a.shape() == b.shape());
    double max_diff = 0, max_abs = 0;
    for (int64_t i = 0; i < a.numel(); i++) {
        max_diff = std::max(max_diff, (double)std::fabs(a.f32()[i] - b.f32()[i]));
        max_abs = std::max(max_abs, (double)std::fabs(a.f32()[i]));
    }
    CHECK(max_diff <= 1e-5 * max_abs);
}
