// Owning tensors' storage cache (runtime/src/tensor.cpp): storage of 1 MiB or
// more goes back to a process-wide cache when its last copy goes, and the
// next owning tensor of the same size takes it. Checked here: what is reused
// and when, that a live tensor's storage is never handed out, that zero-filled
// tensors are zero on reused storage, and that forward() writes every element
// of outputs whose storage held other values (NaN) before.
#include "reference.h"

#include <hmha/hmha.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace hmha::detail {
size_t cached_storage_bytes();  // runtime/src/tensor.cpp
}

namespace {

constexpr int64_t kBigFloats = 1 << 19;  // 2 MiB of floats: cached
constexpr size_t kBigBytes = sizeof(float) * kBigFloats;

}  // namespace

TEST_CASE("tensor storage: a released owning tensor's storage goes to the next of its size", "[tensor]") {
    const uint8_t *first = nullptr;
    size_t before = 0;
    {
        hmha::Tensor a = hmha::Tensor::uninitialized({kBigFloats});
        first = a.bytes();
        hmha::Tensor copy = a;  // copies share storage: released with the last one
        a = hmha::Tensor();
        before = hmha::detail::cached_storage_bytes();
    }
    CHECK(hmha::detail::cached_storage_bytes() == before + kBigBytes);
    hmha::Tensor b = hmha::Tensor::uninitialized({2, kBigFloats / 2});  // same bytes, another shape
    CHECK(b.bytes() == first);
    CHECK(hmha::detail::cached_storage_bytes() == before);

    // While b lives, a tensor of its size gets other storage.
    hmha::Tensor c = hmha::Tensor::uninitialized({kBigFloats});
    CHECK(c.bytes() != b.bytes());

    // Another size does not take it; small tensors never enter the cache.
    const uint8_t *b_bytes = b.bytes();
    b = hmha::Tensor();
    hmha::Tensor d = hmha::Tensor::uninitialized({kBigFloats + 16});
    CHECK(d.bytes() != b_bytes);
    const size_t held = hmha::detail::cached_storage_bytes();
    { hmha::Tensor small = hmha::Tensor::uninitialized({1000}); }
    CHECK(hmha::detail::cached_storage_bytes() == held);
}

TEST_CASE("tensor storage: zero-filled tensors are zero on reused storage; the cache has a bound", "[tensor]") {
    const uint8_t *dirty = nullptr;
    {
        hmha::Tensor a = hmha::Tensor::uninitialized({kBigFloats});
        std::fill(a.f32(), a.f32() + kBigFloats, std::numeric_limits<float>::quiet_NaN());
        dirty = a.bytes();
    }
    hmha::Tensor z({kBigFloats});
    CHECK(z.bytes() == dirty);
    const std::vector<float> zs = tensor_values(z);
    CHECK(std::all_of(zs.begin(), zs.end(), [](float x) { return x == 0.0f; }));

    // Storage past the cache's bound (256 MiB) is freed, not kept; no page of
    // it is touched here.
    const size_t held = hmha::detail::cached_storage_bytes();
    { hmha::Tensor huge = hmha::Tensor::uninitialized({(int64_t(256) << 20) / 4 + 1}); }
    CHECK(hmha::detail::cached_storage_bytes() == held);
    CHECK(held <= (size_t(256) << 20));
}

TEST_CASE("tensor storage: forward() writes every element of outputs on reused storage", "[tensor]") {
    // (2, 8192, 16, 16, 2): the output and the averaged weights 1 MiB each.
    hmha::Options o;
    o.embed_dim = 16;
    o.num_heads = 2;
    o.batch_first = true;
    std::mt19937 rng(7);
    const auto sd = random_state_dict(o, rng);
    const int64_t N = 2, L = 8192, S = 16;
    const hmha::Tensor q = random_tensor({N, L, o.embed_dim}, rng);
    const hmha::Tensor kv = random_tensor({N, S, o.embed_dim}, rng);
    hmha::MultiheadAttention mha(o, sd);
    hmha::ForwardOptions fo;
    fo.need_weights = true;

    std::vector<float> out0, w0;
    const uint8_t *out_bytes = nullptr, *w_bytes = nullptr;
    {
        const hmha::ForwardResult r = mha.forward(q, kv, kv, fo);
        REQUIRE(r.attn_output.nbytes() >= (size_t(1) << 20));
        REQUIRE(r.attn_output_weights->nbytes() >= (size_t(1) << 20));
        const RefResult ref = reference_forward(o, sd, q, kv, kv, fo);
        CHECK(compare_to_reference(r.attn_output, ref.out_shape, ref.out) == "");
        CHECK(compare_to_reference(*r.attn_output_weights, ref.w_shape, ref.weights) == "");
        out0 = tensor_values(r.attn_output);
        w0 = tensor_values(*r.attn_output_weights);
        out_bytes = r.attn_output.bytes();
        w_bytes = r.attn_output_weights->bytes();
    }
    // Fill the released storage with NaN through tensors that take it back.
    {
        hmha::Tensor a = hmha::Tensor::uninitialized({(int64_t)out0.size()});
        hmha::Tensor b = hmha::Tensor::uninitialized({(int64_t)w0.size()});
        for (hmha::Tensor *t : {&a, &b}) std::fill(t->f32(), t->f32() + t->numel(), std::nanf(""));
        CHECK((a.bytes() == out_bytes || a.bytes() == w_bytes));
    }
    const hmha::ForwardResult r = mha.forward(q, kv, kv, fo);
    CHECK((r.attn_output.bytes() == out_bytes || r.attn_output.bytes() == w_bytes));
    CHECK(std::memcmp(tensor_values(r.attn_output).data(), out0.data(), out0.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(tensor_values(*r.attn_output_weights).data(), w0.data(), w0.size() * sizeof(float)) == 0);
}
