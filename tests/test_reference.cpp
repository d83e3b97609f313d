// hmha::MultiheadAttention::forward against the independent float64 reference
// (reference.cpp) over many seeded random configurations: odd sizes, every
// feature and mask combination, and a few large shapes. The generator is a
// fixed-seed std::mt19937 and every failure prints its configuration and seed,
// so a failure reproduces by running that one case.
#include "reference.h"

#include <hmha/hmha.h>
#include <catch2/catch.hpp>

#include "device.h"
#include "../runtime/src/sdpa_classes.h"
#include "sdpa_class_keys.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <thread>

namespace {

enum class Layout { SeqFirst, BatchFirst, Unbatched };
enum class MaskKind { None, Bool2D, Float2D, Bool3D, Float3D };
enum class PadKind { None, Bool, Float };
enum class Weights { None, Averaged, PerHead };

const char *name(Layout l) {
    return l == Layout::SeqFirst ? "seq_first" : l == Layout::BatchFirst ? "batch_first" : "unbatched";
}
const char *name(MaskKind m) {
    const char *names[] = {"none", "bool2d", "float2d", "bool3d", "float3d"};
    return names[(int)m];
}
const char *name(PadKind p) {
    return p == PadKind::None ? "none" : p == PadKind::Bool ? "bool" : "float";
}
const char *name(Weights w) {
    return w == Weights::None ? "none" : w == Weights::Averaged ? "avg" : "per_head";
}

struct Case {
    int64_t E = 8, H = 2, L = 3, S = 3, N = 2;
    int64_t kdim = 0, vdim = 0;  // 0: embed_dim, as in Options
    bool bias = true, add_bias_kv = false, add_zero_attn = false;
    Layout layout = Layout::SeqFirst;
    MaskKind mask = MaskKind::None;
    PadKind pad = PadKind::None;
    bool causal = false;
    Weights weights = Weights::Averaged;
    bool self_attention = false;         // query, key and value are one tensor (aliasing)
    bool shared_kv = false;              // key and value are one tensor (kdim = vdim)
    bool unbatched_batch_first = false;  // Options.batch_first with unbatched inputs (must be ignored)
    double hide_p = 0.25;                // chance that a mask element hides its key
    hmha::Scratch scratch = hmha::Scratch::Auto;
    int64_t batch_chunk = 0;  // Options::batch_chunk
    hmha::GpuAttention gpu_attention = hmha::GpuAttention::Fused;

    std::string describe() const {
        std::ostringstream s;
        s << "E=" << E << " H=" << H << " L=" << L << " S=" << S << " N=" << N << " kdim=" << kdim << " vdim=" << vdim
          << " bias=" << bias << " add_bias_kv=" << add_bias_kv << " add_zero_attn=" << add_zero_attn
          << " layout=" << name(layout) << " attn_mask=" << name(mask) << " key_padding_mask=" << name(pad)
          << " is_causal=" << causal << " need_weights=" << name(weights) << " self_attention=" << self_attention
          << " shared_kv=" << shared_kv << " unbatched_batch_first=" << unbatched_batch_first << " hide_p=" << hide_p
          << " scratch=" << hmha::to_string(scratch) << " batch_chunk=" << batch_chunk
          << " gpu_attention=" << hmha::to_string(gpu_attention);
        return s.str();
    }
};

// Shape of a sequence tensor (query/key/value) in the case's layout.
std::vector<int64_t> seq_shape(const Case &c, int64_t len, int64_t features) {
    switch (c.layout) {
        case Layout::SeqFirst:
            return {len, c.N, features};
        case Layout::BatchFirst:
            return {c.N, len, features};
        default:
            return {len, features};
    }
}

// Bool masks hide with probability hide_p; float masks are -inf (hidden) with
// probability hide_p / 2 and otherwise a moderate additive bias.
hmha::Tensor random_mask(std::vector<int64_t> shape, bool is_bool, double hide_p, std::mt19937 &rng) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    std::uniform_real_distribution<double> u(0.0, 1.0);
    if (is_bool) {
        std::vector<uint8_t> v((size_t)n);
        for (auto &b : v) b = u(rng) < hide_p ? 1 : 0;
        return hmha::Tensor::from_bools(std::move(shape), v);
    }
    std::vector<float> v((size_t)n);
    for (auto &x : v) x = u(rng) < hide_p / 2 ? -std::numeric_limits<float>::infinity() : (float)(4.0 * u(rng) - 2.0);
    return hmha::Tensor::from_floats(std::move(shape), v);
}

std::vector<uint8_t> snapshot(const hmha::Tensor &t) {
    if (t.numel() == 0) return {};
    const uint8_t *p = t.dtype() == hmha::DType::Bool ? t.bytes() : (const uint8_t *)t.f32();
    return std::vector<uint8_t>(p, p + t.nbytes());
}

// Builds the case's module and inputs from `seed`, runs the runtime and the
// reference, and checks outputs, weights and that the inputs were not written.
void run_case(const Case &c, uint32_t seed) {
    INFO(c.describe() << " seed=" << seed);
    std::mt19937 rng(seed);
    hmha::Options o;
    o.device = test_device();
    o.embed_dim = c.E;
    o.num_heads = c.H;
    o.bias = c.bias;
    o.add_bias_kv = c.add_bias_kv;
    o.add_zero_attn = c.add_zero_attn;
    o.kdim = c.kdim;
    o.vdim = c.vdim;
    o.batch_first = c.layout == Layout::BatchFirst || (c.layout == Layout::Unbatched && c.unbatched_batch_first);
    o.scratch = c.scratch;
    o.batch_chunk = c.batch_chunk;
    o.gpu_attention = c.gpu_attention;
    const int64_t kdim = c.kdim ? c.kdim : c.E, vdim = c.vdim ? c.vdim : c.E;
    const auto sd = random_state_dict(o, rng);

    hmha::Tensor q = random_tensor(seq_shape(c, c.L, c.E), rng);
    hmha::Tensor k = c.self_attention ? q : random_tensor(seq_shape(c, c.S, kdim), rng);
    // shared_kv where the case's kdim and vdim (possibly set after it was drawn) allow it.
    hmha::Tensor v = c.self_attention               ? q
                     : c.shared_kv && kdim == vdim ? k
                                                   : random_tensor(seq_shape(c, c.S, vdim), rng);

    hmha::ForwardOptions fo;
    const bool unbatched = c.layout == Layout::Unbatched;
    if (c.mask != MaskKind::None) {
        const bool three = c.mask == MaskKind::Bool3D || c.mask == MaskKind::Float3D;
        const bool is_bool = c.mask == MaskKind::Bool2D || c.mask == MaskKind::Bool3D;
        std::vector<int64_t> shape{c.L, c.S};
        if (three) shape.insert(shape.begin(), unbatched ? c.H : c.N * c.H);
        fo.attn_mask = random_mask(shape, is_bool, c.hide_p, rng);
    }
    if (c.pad != PadKind::None) {
        fo.key_padding_mask = random_mask(unbatched ? std::vector<int64_t>{c.S} : std::vector<int64_t>{c.N, c.S},
                                          c.pad == PadKind::Bool, c.hide_p, rng);
    }
    fo.is_causal = c.causal;
    fo.need_weights = c.weights != Weights::None;
    fo.average_attn_weights = c.weights != Weights::PerHead;

    const auto q0 = snapshot(q), k0 = snapshot(k), v0 = snapshot(v);
    const RefResult ref = reference_forward(o, sd, q, k, v, fo);
    hmha::ForwardResult got;
    try {
        hmha::MultiheadAttention mha(o, sd);
        got = mha.forward(q, k, v, fo);
    } catch (const std::exception &e) {
        FAIL_CHECK("forward threw: " << e.what());
        return;
    }
    CHECK(compare_to_reference(got.attn_output, ref.out_shape, ref.out) == "");
    REQUIRE(got.attn_output_weights.has_value() == ref.has_weights);
    if (ref.has_weights) CHECK(compare_to_reference(*got.attn_output_weights, ref.w_shape, ref.weights) == "");
    CHECK(snapshot(q) == q0);
    CHECK(snapshot(k) == k0);
    CHECK(snapshot(v) == v0);
}

template <class T>
const T &pick(std::mt19937 &rng, const std::vector<T> &options) {
    return options[std::uniform_int_distribution<size_t>(0, options.size() - 1)(rng)];
}

bool coin(std::mt19937 &rng, double p = 0.5) {
    return std::uniform_real_distribution<double>(0, 1)(rng) < p;
}

// A random small configuration: L, S in {1, 3, 17, 65}, N in {1, 2, 3}, odd
// head dims including 1 and 128, 1..8 heads. E is capped at 256 so that the
// naive reference stays fast; larger E has its own test. Key and value are
// sometimes one tensor (shared_kv), as in cross-attention over one memory.
Case random_case(std::mt19937 &rng) {
    Case c;
    const int64_t D = pick<int64_t>(rng, {1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 32, 64, 128});
    c.H = std::uniform_int_distribution<int64_t>(1, 8)(rng);
    while (c.H > 1 && c.H * D > 256) --c.H;
    c.E = c.H * D;
    c.L = pick<int64_t>(rng, {1, 3, 17, 65});
    c.S = pick<int64_t>(rng, {1, 3, 17, 65});
    c.N = pick<int64_t>(rng, {1, 2, 3});
    if (coin(rng, 0.3)) {
        c.kdim = pick<int64_t>(rng, {1, 3, 7, 17, 40});
        c.vdim = pick<int64_t>(rng, {0, 1, 5, 17, 33});
    }
    c.bias = coin(rng, 0.7);
    c.add_bias_kv = coin(rng, 0.3);
    c.add_zero_attn = coin(rng, 0.3);
    c.layout = pick<Layout>(rng, {Layout::SeqFirst, Layout::BatchFirst, Layout::Unbatched});
    c.mask =
        pick<MaskKind>(rng, {MaskKind::None, MaskKind::Bool2D, MaskKind::Float2D, MaskKind::Bool3D, MaskKind::Float3D});
    c.pad = pick<PadKind>(rng, {PadKind::None, PadKind::Bool, PadKind::Float});
    c.causal = coin(rng, 0.3);
    c.weights = pick<Weights>(rng, {Weights::None, Weights::Averaged, Weights::PerHead});
    c.hide_p = pick<double>(rng, {0.1, 0.25, 0.5});
    c.self_attention = c.kdim == 0 && c.vdim == 0 && c.L == c.S && coin(rng, 0.3);
    c.unbatched_batch_first = c.layout == Layout::Unbatched && coin(rng);
    c.shared_kv = !c.self_attention && c.kdim == c.vdim && coin(rng, 0.2);
    return c;
}

}  // namespace

TEST_CASE("reference: 300 seeded random configurations match the float64 reference", "[reference]") {
    std::mt19937 rng(20240601);
    for (uint32_t i = 0; i < 300; ++i) run_case(random_case(rng), 1000 + i);
}

TEST_CASE("reference: every attn_mask x key_padding_mask x is_causal x layout combination", "[reference]") {
    std::mt19937 rng(7);
    uint32_t seed = 5000;
    for (MaskKind m : {MaskKind::None, MaskKind::Bool2D, MaskKind::Float2D, MaskKind::Bool3D, MaskKind::Float3D})
        for (PadKind p : {PadKind::None, PadKind::Bool, PadKind::Float})
            for (bool causal : {false, true})
                for (Layout l : {Layout::SeqFirst, Layout::BatchFirst, Layout::Unbatched}) {
                    Case c = random_case(rng);
                    c.mask = m;
                    c.pad = p;
                    c.causal = causal;
                    c.layout = l;
                    c.self_attention = false;
                    run_case(c, seed++);
                }
}

TEST_CASE("reference: every bias x add_bias_kv x add_zero_attn x kdim/vdim x need_weights combination", "[reference]") {
    std::mt19937 rng(11);
    uint32_t seed = 6000;
    const std::vector<std::pair<int64_t, int64_t>> dims{{0, 0}, {5, 0}, {0, 3}, {7, 17}};
    for (bool bias : {false, true})
        for (bool bias_kv : {false, true})
            for (bool zero_attn : {false, true})
                for (auto [kdim, vdim] : dims)
                    for (Weights w : {Weights::None, Weights::Averaged, Weights::PerHead}) {
                        Case c = random_case(rng);
                        c.bias = bias;
                        c.add_bias_kv = bias_kv;
                        c.add_zero_attn = zero_attn;
                        c.kdim = kdim;
                        c.vdim = vdim;
                        c.weights = w;
                        c.self_attention = false;
                        run_case(c, seed++);
                    }
}

// Scratch::PerHead (hmha.h) on the CPU: Q and then the attention output live in
// the output tensor, K and V are projected one head (or group of narrow heads)
// at a time, the output projection runs in place. Every feature with
// need_weights=false, at sizes where Auto would pick Sequence: with
// need_weights=true both policies take the same path, so those cases only
// check that the option changes nothing there. Sequence is forced as well.
TEST_CASE("reference: Scratch::PerHead and Scratch::Sequence over 300 random configurations", "[reference]") {
    std::mt19937 rng(20261123);
    for (uint32_t i = 0; i < 300; ++i) {
        Case c = random_case(rng);
        if (coin(rng, 0.8)) c.weights = Weights::None;
        c.scratch = i % 3 == 2 ? hmha::Scratch::Sequence : hmha::Scratch::PerHead;
        run_case(c, 12000 + i);
    }
}

// Options::batch_chunk: on the CPU the Sequence path projects, attends and
// projects out a chunk of batches per pass (runtime/src/mha.cpp,
// sequence_batch_chunk; with (L, N, E) inputs one batch). Chunks of 1 to 3
// batches of N = 2 to 7 (short last chunks), every weights kind, per-batch
// masks (3-D attn_mask, key_padding_mask), causal, appended keys (their
// per-batch copy into K and V), kdim/vdim and S = 0, in every layout, and
// chunks of N or more.
TEST_CASE("reference: Sequence passes of batch_chunk batches", "[reference]") {
    std::mt19937 rng(20261126);
    for (uint32_t i = 0; i < 150; ++i) {
        Case c = random_case(rng);
        c.layout = i % 10 >= 6 ? Layout::SeqFirst : i % 10 == 5 ? Layout::Unbatched : Layout::BatchFirst;
        c.N = c.layout == Layout::Unbatched ? 1 : pick<int64_t>(rng, {2, 3, 5, 7});
        c.batch_chunk = pick<int64_t>(rng, {1, 1, 2, 3, 7});
        c.scratch = hmha::Scratch::Sequence;
        if (i % 15 == 0) {
            c.S = 0;
            c.self_attention = false;
        }
        run_case(c, 16000 + i);
    }
    // Auto: 2 * (L + S) * E floats a batch, 512 KiB here, so on up to 7
    // threads (1 MiB each) a pass holds fewer than 16 batches.
    Case c;
    c.E = 256;
    c.H = 4;
    c.L = c.S = 128;
    c.N = 16;
    c.layout = Layout::BatchFirst;
    c.weights = Weights::None;
    c.pad = PadKind::Bool;
    c.causal = true;
    run_case(c, 16200);
    c.weights = Weights::Averaged;
    run_case(c, 16201);
    c.layout = Layout::SeqFirst;
    c.add_bias_kv = true;
    run_case(c, 16202);
    c.weights = Weights::None;
    run_case(c, 16203);
}

// Per-head rounds around the narrow-head grouping (on the CPU heads of width
// D go ceil(64 / D) at a time, on a GPU that rounded up to a multiple of
// 64 / gcd(D, 64); the last round possibly short), row blocks of the in-place
// output projection (64 rows at E = 1024, more below; 64 or more on a GPU),
// long keys for both sdpa shape classes, every layout, masks and causal.
TEST_CASE("reference: Scratch::PerHead head groups, row blocks and key counts", "[reference]") {
    uint32_t seed = 13000;
    const std::vector<std::tuple<int64_t, int64_t, int64_t, int64_t>> shapes{
        // D, H, L, S
        {1, 5, 17, 3},  {3, 23, 9, 40},   {7, 10, 65, 33},   {31, 3, 4, 300}, {32, 3, 70, 17},
        {33, 4, 5, 129}, {64, 2, 130, 65}, {65, 2, 3, 257},  {128, 8, 67, 5}, {100, 3, 200, 600},
        {16, 9, 40, 33}, {48, 5, 33, 70}, {8, 20, 7, 9}};
    for (const auto &[D, H, L, S] : shapes)
        for (Layout l : {Layout::SeqFirst, Layout::BatchFirst, Layout::Unbatched}) {
            Case c;
            c.H = H;
            c.E = H * D;
            c.L = L;
            c.S = S;
            c.N = l == Layout::Unbatched ? 1 : 2;
            c.layout = l;
            c.weights = Weights::None;
            c.scratch = hmha::Scratch::PerHead;
            c.mask = l == Layout::SeqFirst ? MaskKind::Float3D : MaskKind::Bool2D;
            c.pad = l == Layout::BatchFirst ? PadKind::Bool : PadKind::None;
            c.causal = l != Layout::BatchFirst;
            c.add_bias_kv = l == Layout::BatchFirst;
            c.add_zero_attn = l == Layout::Unbatched;
            c.hide_p = 0.1;
            run_case(c, seed++);
            c.self_attention = L == S;
            c.shared_kv = L != S;  // cross-attention with key = value (one upload on a GPU)
            c.mask = MaskKind::None;
            c.pad = PadKind::None;
            run_case(c, seed++);
        }
    // No keys but the appended ones (S = 0: add_bias_kv and/or add_zero_attn).
    for (Layout l : {Layout::SeqFirst, Layout::BatchFirst, Layout::Unbatched}) {
        Case c;
        c.H = 3;
        c.E = 3 * 32;
        c.L = 5;
        c.S = 0;
        c.N = l == Layout::Unbatched ? 1 : 2;
        c.layout = l;
        c.weights = Weights::None;
        c.scratch = hmha::Scratch::PerHead;
        c.add_bias_kv = l != Layout::Unbatched;
        c.add_zero_attn = l != Layout::BatchFirst;
        c.causal = l == Layout::SeqFirst;
        run_case(c, seed++);
    }
}

TEST_CASE("reference: head_dim 1..128 with 1..8 heads unmasked and masked", "[reference]") {
    uint32_t seed = 7000;
    for (int64_t D : {1, 2, 3, 5, 8, 15, 16, 17, 33, 63, 64, 65, 127, 128})
        for (int64_t H : {1, 3, 8}) {
            if (H * D > 512) continue;  // covered by the large test
            Case c;
            c.H = H;
            c.E = H * D;
            c.L = 17;
            c.S = 65;
            c.N = 2;
            run_case(c, seed++);
            c.mask = MaskKind::Float3D;
            c.pad = PadKind::Bool;
            c.causal = true;
            c.weights = Weights::PerHead;
            c.layout = Layout::BatchFirst;
            run_case(c, seed++);
        }
}

// The GPU sdpa's second kernel (schedules/gpu/sdpa.h, SdpaParams::head_dim:
// head_dim 64, whole query blocks, no masks), which no test above reaches
// (their query counts are odd): query counts that are multiples of 64 (whole
// blocks for any power-of-two query block up to 64) and one past them, key
// counts inside, at and past a key block, causal, appended keys, and a key
// padding mask (back to the general kernel). On PoCL, 2026-11-27, the
// OpenCL kernels run (POCL_DEBUG): the specialized one for L = 64 and 128,
// the general one for L = 65 and with the mask. On the CPU, sdpa as usual.
TEST_CASE("reference: need_weights=false at head_dim 64 with whole query blocks", "[reference]") {
    uint32_t seed = 7200;
    for (int64_t L : {64, 128, 65})
        for (int64_t S : {1, 33, 100})
            for (int variant = 0; variant < 4; variant++) {
                Case c;
                c.H = variant % 2 ? 3 : 1;
                c.E = 64 * c.H;
                c.L = L;
                c.S = S;
                c.N = 2;
                c.weights = Weights::None;
                c.causal = variant == 1;
                c.add_bias_kv = c.add_zero_attn = variant == 2;
                c.pad = variant == 3 ? PadKind::Bool : PadKind::None;
                c.layout = variant == 3 ? Layout::BatchFirst : Layout::SeqFirst;
                c.hide_p = 0.1;
                run_case(c, seed++);
            }
}

// Heads wider than the fused GPU sdpa's shared memory holds (runtime/src/mha.cpp,
// kGpuFusedMaxHeadDim = 128) take the unfused path on a GPU family, the fused
// one on the CPU; need_weights=false either way, with masks and causal.
TEST_CASE("reference: need_weights=false with head_dim 127 to 300", "[reference]") {
    uint32_t seed = 7300;
    for (int64_t D : {127, 128, 129, 300})
        for (int masked = 0; masked < 2; masked++) {
            Case c;
            c.H = D == 300 ? 1 : 2;
            c.E = c.H * D;
            c.L = 19;
            c.S = 40;
            c.N = 2;
            c.weights = Weights::None;
            if (masked) {
                c.mask = MaskKind::Bool3D;
                c.pad = PadKind::Float;
                c.causal = true;
                c.add_bias_kv = true;
                c.layout = Layout::BatchFirst;
                c.hide_p = 0.1;
            }
            run_case(c, seed++);
        }
}

// Options::gpu_attention = Unfused: need_weights=false through masked_softmax
// and attend on a GPU (per-head weights in query-chunk scratch), at every head
// width; the CPU ignores it (its fused kernels run). Odd sizes, masks,
// causal, appended keys, and more queries than one chunk (1024).
TEST_CASE("reference: need_weights=false through the unfused GPU path (Options::gpu_attention)", "[reference]") {
    uint32_t seed = 7400;
    const std::pair<int64_t, int64_t> shapes[] = {{1, 1}, {3, 17}, {17, 3}, {65, 65}, {1029, 40}};
    for (const auto &[L, S] : shapes)
        for (int variant = 0; variant < 2; variant++) {
            Case c;
            c.H = variant == 0 ? 2 : 3;
            c.E = variant == 0 ? 16 : 3 * 13;
            c.L = L;
            c.S = S;
            c.N = 2;
            c.weights = Weights::None;
            c.gpu_attention = hmha::GpuAttention::Unfused;
            c.mask = variant == 0 ? MaskKind::Bool3D : MaskKind::Float2D;
            c.pad = variant == 1 ? PadKind::Bool : PadKind::None;
            c.causal = variant == 1;
            c.add_bias_kv = variant == 0;
            c.layout = variant == 1 ? Layout::BatchFirst : Layout::SeqFirst;
            c.hide_p = 0.2;
            run_case(c, seed++);
        }
}

TEST_CASE("reference: S much larger than L and L much larger than S", "[reference]") {
    uint32_t seed = 7500;
    for (auto [L, S] : std::vector<std::pair<int64_t, int64_t>>{{1, 200}, {200, 1}, {2, 129}, {129, 2}})
        for (bool causal : {false, true}) {
            Case c;
            c.E = 24;
            c.H = 3;
            c.L = L;
            c.S = S;
            c.N = 2;
            c.causal = causal;
            c.pad = PadKind::Bool;
            c.hide_p = 0.1;
            c.weights = Weights::PerHead;
            run_case(c, seed++);
        }
}

// The CPU family builds the fused sdpa three times (shape classes,
// CMakeLists.txt): up to hmha::kSdpaRowsMaxKeys keys sdpa_rows takes whole
// rows of keys; past that, long key sequences use key blocks of
// HMHA_SDPA_KEY_BLOCK, short ones of HMHA_SDPA_SHORT_KEY_BLOCK, whichever pads
// the keys least; Scratch::PerHead calls the two online classes built to read
// K^T (HMHA_SDPA_KT_*). Key counts at and around both blocks' multiples (past
// the rows' cap on the sequence path) and around the cap run each variant of
// every build, full and partial last blocks, with masks, causal and appended
// keys (S' = S + 1, 2), need_weights=false.
TEST_CASE("reference: fused sdpa at key counts around the shape classes' key blocks", "[reference]") {
    for (hmha::Scratch scratch : {hmha::Scratch::Sequence, hmha::Scratch::PerHead}) {
        const bool kt = scratch == hmha::Scratch::PerHead;
        const int64_t kb = kt ? HMHA_SDPA_KT_KEY_BLOCK : HMHA_SDPA_KEY_BLOCK;
        const int64_t kb_short = kt ? HMHA_SDPA_KT_SHORT_KEY_BLOCK : HMHA_SDPA_SHORT_KEY_BLOCK;
        // Past the rows' cap, a multiple of the long block: its multiples
        // stay multiples.
        const int64_t base = kt ? 0 : hmha::padded_keys(hmha::kSdpaRowsMaxKeys, kb);
        std::vector<int64_t> key_counts{base + 1, base + kb_short - 1, base + kb_short, base + kb_short + 1,
                                        base + kb - 1, base + kb, base + kb + 1, base + 2 * kb + 3};
        if (!kt) {
            for (int64_t S : {int64_t{1}, kb_short + 1, hmha::kSdpaRowsMaxKeys - 2, hmha::kSdpaRowsMaxKeys})
                key_counts.push_back(S);
        }
        int rows_runs = 0, short_runs = 0, long_runs = 0;
        uint32_t seed = kt ? 8900 : 8800;
        for (int64_t S : key_counts)
            for (int variant = 0; variant < 3; variant++) {
                Case c;
                c.E = 32;
                c.H = 2;
                c.L = variant == 2 ? 5 : 33;
                c.S = S;
                c.N = 2;
                c.weights = Weights::None;
                c.mask = variant == 0 ? MaskKind::None : MaskKind::Bool3D;
                c.pad = variant == 1 ? PadKind::Float : PadKind::None;
                c.causal = variant == 1;
                c.add_bias_kv = variant == 2;
                c.add_zero_attn = variant == 2;
                c.hide_p = 0.1;
                c.scratch = scratch;
                if (c.causal) c.L = S + 3;  // every key visible to some query: one call with all S keys
                const int64_t keys = S + (c.add_bias_kv ? 1 : 0) + (c.add_zero_attn ? 1 : 0);
                if (!kt && hmha::use_rows(keys)) {
                    rows_runs++;
                } else {
                    (hmha::use_short_key_block(keys, kb, kb_short) ? short_runs : long_runs)++;
                }
                run_case(c, seed++);
            }
        // Every class ran, so none can be wrong unnoticed.
        INFO("scratch=" << hmha::to_string(scratch));
        CHECK(short_runs > 0);
        CHECK(long_runs > 0);
        CHECK((kt || rows_runs > 0));
    }
}

// sdpa_rows_copy_v, softmax_attend_copy_v and softmax_attend_mean_copy_v (the
// kernels copying each head's V into contiguous rows) where the Sequence
// path's V rows are at least kCopyValuesMinRowStride floats apart and at least
// kCopyValuesMinQueries queries read them (sdpa_classes.h): a head_dim that is
// no multiple of any vector (65), key counts from 1 to past a P.V tile's
// unrolled vectors, masks, causal query chunks, appended keys, averaged and
// per-head weights; and just below the query threshold, where the plain
// classes run. Then sdpa_copy_v and sdpa_short_copy_v past kSdpaRowsMaxKeys
// (keys and values of 8 features keep the reference's projections cheap;
// projected, V's rows are still E floats apart), and rows closer together
// read by many keys.
TEST_CASE("reference: whole-row kernels copying V where its rows are far apart", "[reference]") {
    const int64_t E = 8 * 65;
    REQUIRE(E >= hmha::kCopyValuesMinRowStride);
    int copy_runs = 0, plain_runs = 0;
    uint32_t seed = 8950;
    for (int64_t L : {hmha::kCopyValuesMinQueries - 1, hmha::kCopyValuesMinQueries, int64_t{33}})
        for (int64_t S : {1, 19, 300})
            for (int variant = 0; variant < 5; variant++) {
                Case c;
                c.E = E;
                c.H = 8;
                c.L = L;
                c.S = S;
                c.N = 2;
                c.layout = variant == 1 ? Layout::BatchFirst : Layout::SeqFirst;
                c.weights = variant == 3 ? Weights::Averaged : variant == 4 ? Weights::PerHead : Weights::None;
                c.mask = variant == 0 || variant >= 3 ? MaskKind::Bool3D : MaskKind::None;
                c.pad = variant == 1 ? PadKind::Float : variant == 4 ? PadKind::Bool : PadKind::None;
                c.causal = variant == 1;
                c.add_bias_kv = variant == 2;
                c.add_zero_attn = variant == 2;
                c.hide_p = 0.2;
                c.scratch = hmha::Scratch::Sequence;
                (hmha::copy_values(E, L, S) ? copy_runs : plain_runs)++;
                run_case(c, seed++);
            }
    CHECK(copy_runs > 0);
    CHECK(plain_runs > 0);

    const int64_t kb = HMHA_SDPA_KEY_BLOCK, kb_short = HMHA_SDPA_SHORT_KEY_BLOCK;
    int short_runs = 0, long_runs = 0;
    // sdpa_class_keys.h's two key counts, and each with two appended keys:
    // both online classes run whatever the key blocks.
    for (int64_t S : {kShortClassKeys, kLongClassKeys})
        for (int variant = 0; variant < 2; variant++) {
            Case c;
            c.E = E;
            c.H = 8;
            c.L = variant == 0 ? hmha::kCopyValuesMinQueries : 37;
            c.S = S;
            c.N = 1;
            c.kdim = c.vdim = 8;
            c.layout = variant == 1 ? Layout::BatchFirst : Layout::SeqFirst;
            c.weights = Weights::None;
            c.mask = variant == 0 ? MaskKind::Bool3D : MaskKind::None;
            c.pad = variant == 1 ? PadKind::Float : PadKind::None;
            c.add_bias_kv = variant == 1;
            c.add_zero_attn = variant == 1;
            c.hide_p = 0.2;
            c.scratch = hmha::Scratch::Sequence;
            const int64_t keys = S + (variant == 1 ? 2 : 0);
            REQUIRE(!hmha::use_rows(keys));
            REQUIRE(hmha::copy_values(E, c.L, keys));
            (hmha::use_short_key_block(keys, kb, kb_short) ? short_runs : long_runs)++;
            run_case(c, seed++);
        }
    CHECK(short_runs > 0);
    CHECK(long_runs > 0);

    // Rows closer than kCopyValuesMinRowStride, copied where many keys are
    // read: at and just below kCopyValuesManyKeys (whole rows), and past
    // kSdpaRowsMaxKeys (online), with every kind of weights.
    const int64_t E_near = 4 * 65;
    REQUIRE(E_near >= hmha::kCopyValuesManyKeysMinRowStride);
    REQUIRE(E_near < hmha::kCopyValuesMinRowStride);
    int near_copy_runs = 0, near_plain_runs = 0;
    for (int64_t S : {hmha::kCopyValuesManyKeys - 1, hmha::kCopyValuesManyKeys, kShortClassKeys})
        for (Weights w : {Weights::None, Weights::Averaged, Weights::PerHead}) {
            Case c;
            c.E = E_near;
            c.H = 4;
            c.L = hmha::kCopyValuesMinQueries + 1;
            c.S = S;
            c.N = 1;
            c.kdim = c.vdim = 8;
            c.weights = w;
            c.mask = w == Weights::PerHead ? MaskKind::Bool3D : MaskKind::None;
            c.pad = w == Weights::Averaged ? PadKind::Float : PadKind::None;
            c.hide_p = 0.2;
            c.scratch = hmha::Scratch::Sequence;
            (hmha::copy_values(E_near, c.L, S) ? near_copy_runs : near_plain_runs)++;
            run_case(c, seed++);
        }
    CHECK(near_copy_runs > 0);
    CHECK(near_plain_runs > 0);
}

// The CPU's whole-row kernels (softmax_attend, softmax_attend_mean when
// averaging, and sdpa_rows for need_weights=false with at most
// kSdpaRowsMaxKeys keys) compute whole register tiles of queries, reading q
// and the masks through a clamp past the last query, and the runtime calls the
// need_weights ones per chunk of 1024 queries: query counts around every query
// block the tuner may pick (8 to 128) and across a chunk boundary, with
// per-query masks, causal rows and appended keys.
TEST_CASE("reference: whole-row kernels at query counts around the query blocks and the query chunk",
          "[reference]") {
    uint32_t seed = 9500;
    for (int64_t L : {1, 3, 7, 9, 17, 31, 33, 63, 65, 127, 129, 1029})
        for (int variant = 0; variant < 4; variant++) {
            Case c;
            c.E = 16;
            c.H = 2;
            c.L = L;
            c.S = variant == 2 ? 1 : 19;
            c.N = variant == 1 ? 1 : 2;
            c.layout = variant == 1 ? Layout::BatchFirst : Layout::SeqFirst;
            c.weights = variant == 0 ? Weights::PerHead : variant == 3 ? Weights::None : Weights::Averaged;
            c.mask = variant == 0 || variant == 3 ? MaskKind::Bool3D : MaskKind::None;
            c.pad = variant == 1 ? PadKind::Float : PadKind::None;
            c.causal = variant == 1 || variant == 3;
            c.add_bias_kv = variant == 2;
            c.add_zero_attn = variant == 2;
            c.hide_p = 0.2;
            run_case(c, seed++);
        }
}

// linear's full-tile path (schedules/cpu/linear.h) splits the rows into
// micro-tiles of unroll_r rows (the last shifted inwards) and those into tasks
// of tile_r / unroll_r micro-tiles (the last shorter), and the outputs into
// tiles of tile_o (the last shifted inwards): 6-row micro-tiles in 96-row
// tasks and 16-float tiles on AVX2, 4 in 32 and 64 on AVX-512, 4 in 32 and 16
// on NEON. Row counts (L and S, one batch) around those, and output widths
// with a partial last tile on each.
TEST_CASE("reference: projections at row counts around linear's micro-tiles and tasks", "[reference]") {
    uint32_t seed = 9600;
    for (int64_t rows : {32, 33, 35, 37, 63, 96, 97, 98, 101, 103, 127, 131, 191, 193, 197})
        for (int64_t E : {40, 72}) {
            Case c;
            c.E = E;
            c.H = 4;
            c.L = rows;
            c.S = rows + (rows % 2 ? 5 : 0);
            c.N = 1;
            c.layout = Layout::BatchFirst;
            c.weights = rows % 3 == 0 ? Weights::Averaged : Weights::None;
            c.mask = MaskKind::None;
            run_case(c, seed++);
        }
}

// need_weights with is_causal on the CPU runs 256-query chunks on the keys
// each chunk may see and zeroes the hidden rest of their weight rows
// (runtime/src/mha.cpp, kCausalWeightsQueryChunk): queries and keys across
// several chunks, more keys than queries and fewer, averaged and per-head
// weights, with masks and padding (whose key indices are absolute), and with
// appended keys (never hidden: no chunks then).
TEST_CASE("reference: causal need_weights in query chunks on the keys each chunk sees", "[reference]") {
    uint32_t seed = 9600;
    const std::pair<int64_t, int64_t> shapes[] = {{257, 257}, {600, 600}, {600, 300}, {300, 700}, {513, 1030}};
    for (const auto &[L, S] : shapes)
        for (int variant = 0; variant < 3; variant++) {
            Case c;
            c.E = 16;
            c.H = 2;
            c.L = L;
            c.S = S;
            c.N = 2;
            c.causal = true;
            c.layout = variant == 1 ? Layout::BatchFirst : Layout::SeqFirst;
            c.weights = variant == 1 ? Weights::PerHead : Weights::Averaged;
            c.mask = variant == 0 ? MaskKind::Bool3D : variant == 1 ? MaskKind::Float2D : MaskKind::None;
            c.pad = variant == 2 ? PadKind::Bool : PadKind::None;
            c.add_bias_kv = variant == 2 && L == 600;
            c.hide_p = 0.1;
            run_case(c, seed++);
        }
}

// softmax_attend_mean may run its Q.K^T and e.V a chunk of keys at a time
// (key_chunk, 128 to 512 as the tuner may pick), and from
// kSoftmaxAttendMeanLongKeys keys on the runtime calls softmax_attend_mean_long,
// which does (CMakeLists.txt: 512-key chunks untuned); for per-head weights
// softmax_attend_long from kSoftmaxAttendLongKeys: key counts around those
// chunks, with averaged and per-head weights, masks, padding and appended
// keys, and a head_dim that is not a multiple of the vector width.
TEST_CASE("reference: need_weights at key counts around the key chunks", "[reference]") {
    uint32_t seed = 9700;
    int long_runs = 0, per_head_long_runs = 0;
    for (int64_t S : {1, 2, 31, 33, 127, 128, 129, 255, 257, 511, 512, 513, 1023, 1024, 1030, 1535, 2049})
        for (int variant = 0; variant < 3; variant++) {
            Case c;
            c.E = variant == 0 ? 64 : 36;
            c.H = variant == 0 ? 2 : 3;
            c.L = variant == 0 ? 5 : 34;
            c.S = S;
            c.N = 2;
            c.layout = variant >= 1 ? Layout::BatchFirst : Layout::SeqFirst;
            c.weights = variant == 2 ? Weights::PerHead : Weights::Averaged;
            c.mask = variant == 1 ? MaskKind::Bool3D : MaskKind::Float2D;
            c.pad = variant == 1 ? PadKind::Bool : variant == 2 ? PadKind::Float : PadKind::None;
            c.add_bias_kv = variant >= 1;
            c.add_zero_attn = variant == 1;
            c.hide_p = 0.2;
            const int64_t keys = S + (variant == 1 ? 2 : variant == 2 ? 1 : 0);
            if (variant < 2 && keys >= hmha::kSoftmaxAttendMeanLongKeys) long_runs++;
            if (variant == 2 && keys >= hmha::kSoftmaxAttendLongKeys) per_head_long_runs++;
            run_case(c, seed++);
        }
    CHECK(long_runs > 0);
    CHECK(per_head_long_runs > 0);
}

TEST_CASE("reference: large configurations (E up to 1024 and L or S up to 700)", "[reference][large]") {
    Case c;
    c.E = 512;
    c.H = 8;
    c.L = 257;
    c.S = 257;
    c.N = 2;
    run_case(c, 9001);

    c.mask = MaskKind::Bool3D;
    c.hide_p = 0.1;
    c.causal = true;
    c.weights = Weights::PerHead;
    c.layout = Layout::BatchFirst;
    run_case(c, 9002);

    c = Case{};
    c.E = 256;
    c.H = 4;
    c.L = 129;
    c.S = 257;
    c.N = 1;
    c.mask = MaskKind::Float2D;
    c.pad = PadKind::Float;
    c.add_bias_kv = true;
    c.add_zero_attn = true;
    c.weights = Weights::None;
    run_case(c, 9003);

    // The fused path (no weights) over several key blocks, with causal block
    // skipping, both L = S and L < S, and padding.
    c = Case{};
    c.E = 256;
    c.H = 4;
    c.L = 513;
    c.S = 513;
    c.N = 1;
    c.causal = true;
    c.pad = PadKind::Bool;
    c.hide_p = 0.05;
    c.weights = Weights::None;
    c.layout = Layout::BatchFirst;
    run_case(c, 9005);
    c.L = 300;
    c.S = 700;
    c.N = 2;
    c.pad = PadKind::None;
    c.mask = MaskKind::Float2D;
    c.layout = Layout::SeqFirst;
    run_case(c, 9006);

    c = Case{};
    c.E = 1024;
    c.H = 16;
    c.L = 65;
    c.S = 33;
    c.N = 1;
    c.kdim = 96;
    c.vdim = 80;
    c.layout = Layout::Unbatched;
    c.pad = PadKind::Bool;
    c.hide_p = 0.1;
    run_case(c, 9004);
}

TEST_CASE("reference: Options::from_state_dict reads embed_dim kdim vdim bias and add_bias_kv", "[reference]") {
    std::mt19937 rng(3);
    for (int i = 0; i < 40; ++i) {
        const Case c = random_case(rng);
        hmha::Options o;
        o.embed_dim = c.E;
        o.num_heads = c.H;
        o.bias = coin(rng);
        o.add_bias_kv = coin(rng);
        o.kdim = c.kdim;
        o.vdim = c.vdim;
        const auto sd = random_state_dict(o, rng);
        INFO(c.describe() << " bias=" << o.bias << " add_bias_kv=" << o.add_bias_kv);
        hmha::Options got;
        REQUIRE_NOTHROW(got = hmha::Options::from_state_dict(sd, c.H));
        CHECK(got.embed_dim == c.E);
        CHECK(got.num_heads == c.H);
        // kdim/vdim may come back as 0 ("embed_dim") or as the number itself.
        CHECK((got.kdim ? got.kdim : got.embed_dim) == (c.kdim ? c.kdim : c.E));
        CHECK((got.vdim ? got.vdim : got.embed_dim) == (c.vdim ? c.vdim : c.E));
        CHECK(got.bias == o.bias);
        CHECK(got.add_bias_kv == o.add_bias_kv);
    }
}

// A key block whose keys are all hidden (the last block holding one or two real
// keys, hidden for every query; or the whole first block hidden), and rows with
// every key hidden, for both sdpa shape classes of both builds and the
// need_weights path. Hidden keys score -inf; Halide's fast-math flags once let
// LLVM fold `max == -inf` to false on AArch64, and such blocks came out NaN
// (generators/attention_scores.h, max_or_zero).
TEST_CASE("reference: key blocks and rows whose keys are all hidden", "[reference]") {
    const float inf = std::numeric_limits<float>::infinity();
    uint32_t seed = 14000;
    for (hmha::Scratch scratch : {hmha::Scratch::Sequence, hmha::Scratch::PerHead})
        for (int64_t kb : {int64_t(HMHA_SDPA_KEY_BLOCK), int64_t(HMHA_SDPA_SHORT_KEY_BLOCK),
                           int64_t(HMHA_SDPA_KT_KEY_BLOCK), int64_t(HMHA_SDPA_KT_SHORT_KEY_BLOCK)})
            for (int kind = 0; kind < 4; kind++)
                for (Weights w : {Weights::None, Weights::Averaged}) {
                    // kind 0, 1: the last one or two keys hidden, in a last block of that many;
                    // kind 2: the first kb keys hidden; kind 3: every key hidden for odd queries.
                    const int64_t S = kind < 2 ? 2 * kb + 1 + kind : 2 * kb + 5, L = 6;
                    std::mt19937 rng(seed);
                    hmha::Options o;
                    o.device = test_device();
                    o.embed_dim = 16;
                    o.num_heads = 2;
                    o.scratch = scratch;
                    const auto sd = random_state_dict(o, rng);
                    hmha::Tensor q = random_tensor({L, 16}, rng), k = random_tensor({S, 16}, rng),
                                 v = random_tensor({S, 16}, rng);
                    std::vector<float> m((size_t)(L * S), 0.0f);
                    for (int64_t i = 0; i < L; i++)
                        for (int64_t j = 0; j < S; j++) {
                            const bool hide = kind < 2 ? j >= S - 1 - kind : kind == 2 ? j < kb : i % 2 == 1;
                            if (hide) m[(size_t)(i * S + j)] = -inf;
                        }
                    hmha::ForwardOptions fo;
                    fo.need_weights = w != Weights::None;
                    fo.attn_mask = hmha::Tensor::from_floats({L, S}, m);
                    INFO("kb=" << kb << " kind=" << kind << " S=" << S << " need_weights=" << name(w)
                               << " scratch=" << hmha::to_string(scratch) << " seed=" << seed);
                    seed++;
                    const RefResult ref = reference_forward(o, sd, q, k, v, fo);
                    hmha::MultiheadAttention mha(o, sd);
                    const hmha::ForwardResult got = mha.forward(q, k, v, fo);
                    CHECK(compare_to_reference(got.attn_output, ref.out_shape, ref.out) == "");
                    if (ref.has_weights) {
                        CHECK(compare_to_reference(*got.attn_output_weights, ref.w_shape, ref.weights) == "");
                    }
                }
}

// forward() is const and may run from several threads on one module: each
// call leases its own scratch (runtime/src/mha.cpp, WorkspacePool). Threads
// mix short inputs (Sequence) and 1100-position ones (Auto picks PerHead), each
// checked against the reference computed beforehand.
TEST_CASE("reference: concurrent forward() calls on one module, both scratch policies", "[reference]") {
    std::mt19937 rng(15000);
    hmha::Options o;
    o.device = test_device();
    o.embed_dim = 32;
    o.num_heads = 2;
    o.batch_first = true;
    const auto sd = random_state_dict(o, rng);
    const hmha::MultiheadAttention mha(o, sd);
    struct Call {
        hmha::Tensor q, kv;
        hmha::ForwardOptions f;
        RefResult ref;
    };
    std::vector<Call> calls;
    for (int64_t L : {5, 1100, 40, 1100, 17, 1100, 1100, 3}) {
        Call c;
        c.q = random_tensor({2, L, 32}, rng);
        c.kv = random_tensor({2, L, 32}, rng);
        c.f.need_weights = false;
        c.f.is_causal = L % 2 == 1;
        c.ref = reference_forward(o, sd, c.q, c.kv, c.kv, c.f);
        calls.push_back(std::move(c));
    }
    std::vector<std::string> errors(calls.size());
    std::vector<std::thread> threads;
    for (size_t t = 0; t < 4; t++) {
        threads.emplace_back([&, t] {
            for (int round = 0; round < 3; round++) {
                for (size_t i = t; i < calls.size(); i += 4) {
                    const Call &c = calls[i];
                    try {
                        const hmha::ForwardResult r = mha.forward(c.q, c.kv, c.kv, c.f);
                        const std::string e = compare_to_reference(r.attn_output, c.ref.out_shape, c.ref.out);
                        if (!e.empty() && errors[i].empty()) errors[i] = e;
                    } catch (const std::exception &e) {
                        errors[i] = std::string("forward threw: ") + e.what();
                    }
                }
            }
        });
    }
    for (std::thread &th : threads) th.join();
    for (size_t i = 0; i < calls.size(); i++) {
        INFO("call " << i << " L=" << calls[i].q.size(1));
        CHECK(errors[i] == "");
    }
}
