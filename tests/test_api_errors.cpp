// SPEC.md §3 through the C++ API: every bad input throws hmha::Error whose
// message names the argument with the expected and the actual value, and it
// is thrown before any kernel runs.
//
// "Before any kernel runs" is made observable: the data of every tensor that
// validation should reject (and of the other inputs of the same call) lives in
// PROT_NONE pages, so touching it crashes the test instead of passing quietly.
// The same trick lets shapes with billions of elements be declared without
// allocating anything.
#include "reference.h"

#include <hmha/hmha.h>
#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <random>

namespace {

struct Outcome {
    bool hmha_error = false;
    std::string message;
};

// Like REQUIRE_THROWS_AS(f(), hmha::Error), but keeps the message so that it
// can be checked and printed; a different exception type counts as a failure.
template <class F>
Outcome outcome_of(F &&f) {
    try {
        f();
    } catch (const hmha::Error &e) {
        return {true, e.what()};
    } catch (const std::exception &e) {
        return {false, std::string("<threw a non-hmha::Error: ") + e.what() + ">"};
    }
    return {false, "<no exception>"};
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return (char)std::tolower(c); });
    return s;
}

// Requires hmha::Error from `expr` whose message contains every needle.
#define CHECK_ERROR_MENTIONS(expr, ...)                                          \
    do {                                                                         \
        const Outcome outcome_ = outcome_of([&] { (void)(expr); });              \
        INFO("expression: " #expr);                                              \
        INFO("message: " << outcome_.message);                                   \
        CHECK(outcome_.hmha_error);                                              \
        for (const std::string &needle_ : std::vector<std::string>{__VA_ARGS__}) \
            CHECK_THAT(outcome_.message, Catch::Matchers::Contains(needle_));    \
    } while (0)

// Like CHECK_ERROR_MENTIONS, but one of the needles is enough (for values a
// message may reasonably give either as a size or as an element count).
#define CHECK_ERROR_MENTIONS_ANY(expr, ...)                                         \
    do {                                                                            \
        const Outcome outcome_ = outcome_of([&] { (void)(expr); });                 \
        INFO("expression: " #expr);                                                 \
        INFO("message: " << outcome_.message);                                      \
        CHECK(outcome_.hmha_error);                                                 \
        bool found_ = false;                                                        \
        for (const std::string &needle_ : std::vector<std::string>{__VA_ARGS__})    \
            found_ = found_ || outcome_.message.find(needle_) != std::string::npos; \
        CHECK(found_);                                                              \
    } while (0)

// Address space that faults on any access. Reserving it costs no memory, so it
// can back tensors of any declared size.
class Poisoned {
public:
    explicit Poisoned(size_t bytes) {
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_ = std::max(page, (bytes + page - 1) / page * page);
        p_ = mmap(nullptr, size_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p_ == MAP_FAILED) {  // a huge reservation may be refused; one page still catches reads from the start
            size_ = page;
            p_ = mmap(nullptr, size_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        }
        REQUIRE(p_ != MAP_FAILED);
    }
    ~Poisoned() { munmap(p_, size_); }
    Poisoned(const Poisoned &) = delete;
    Poisoned &operator=(const Poisoned &) = delete;

    hmha::Tensor tensor(std::vector<int64_t> shape, hmha::DType dtype = hmha::DType::F32) const {
        return hmha::Tensor::wrap(p_, std::move(shape), dtype);
    }

private:
    void *p_ = nullptr;
    size_t size_ = 0;
};

// One poisoned region big enough for everything the small cases declare.
const Poisoned &poison() {
    static const Poisoned p(1 << 20);
    return p;
}

hmha::Options opts(int64_t E, int64_t H) {
    hmha::Options o;
    o.embed_dim = E;
    o.num_heads = H;
    return o;
}

// A state dict with the right names and shapes whose data is poisoned, for
// checks that must fail before any weight is read.
std::map<std::string, hmha::Tensor> poisoned_state_dict(const hmha::Options &o) {
    std::mt19937 rng(0);
    std::map<std::string, hmha::Tensor> sd = random_state_dict(o, rng);
    for (auto &[name, t] : sd) t = poison().tensor(t.shape());
    return sd;
}

// Constructing and running a module, so that a check deferred to forward()
// (e.g. of the device) still counts.
void construct_and_run(const hmha::Options &o, const std::map<std::string, hmha::Tensor> &sd) {
    hmha::MultiheadAttention mha(o, sd);
    std::mt19937 rng(1);
    const int64_t kdim = o.kdim ? o.kdim : o.embed_dim, vdim = o.vdim ? o.vdim : o.embed_dim;
    mha.forward(random_tensor({2, 1, o.embed_dim}, rng), random_tensor({2, 1, kdim}, rng),
                random_tensor({2, 1, vdim}, rng));
}

}  // namespace

TEST_CASE("errors: embed_dim not divisible by num_heads names both values", "[errors]") {
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(opts(10, 3), poisoned_state_dict(opts(10, 1))), "embed_dim",
                         "num_heads", "10", "3");
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(opts(12, 5), poisoned_state_dict(opts(12, 1))), "embed_dim",
                         "num_heads", "12", "5");
}

TEST_CASE("errors: non-positive embed_dim or num_heads and negative kdim, vdim or batch_chunk", "[errors]") {
    const auto sd = poisoned_state_dict(opts(8, 1));
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(opts(0, 1), sd), "embed_dim", "0");
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(opts(-8, 2), sd), "embed_dim", "-8");
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(opts(8, 0), sd), "num_heads", "0");
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(opts(8, -2), sd), "num_heads", "-2");
    hmha::Options o = opts(8, 2);
    o.kdim = -3;
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, sd), "kdim", "-3");
    o.kdim = 0;
    o.vdim = -5;
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, sd), "vdim", "-5");
    o.vdim = 0;
    o.batch_chunk = -1;
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, sd), "batch_chunk", ">= 0", "-1");
}

TEST_CASE("errors: each missing weight tensor is named", "[errors]") {
    hmha::Options packed = opts(8, 2);
    packed.add_bias_kv = true;
    hmha::Options separate = opts(8, 2);
    separate.kdim = 5;
    separate.vdim = 7;
    for (const hmha::Options &o : {packed, separate}) {
        const auto full = poisoned_state_dict(o);
        for (const auto &[name, t] : full) {
            auto sd = full;
            sd.erase(name);
            INFO("without " << name);
            CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, sd), name);
        }
    }
}

TEST_CASE("errors: extra or unexpected weight tensors are named", "[errors]") {
    const hmha::Options o = opts(8, 2);
    auto with = [&](const hmha::Options &opt, const std::string &name, std::vector<int64_t> shape) {
        auto sd = poisoned_state_dict(opt);
        sd[name] = poison().tensor(std::move(shape));
        return sd;
    };
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, with(o, "foo.weight", {8, 8})), "foo.weight");
    // Names that exist in PyTorch but not for this configuration.
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, with(o, "q_proj_weight", {8, 8})), "q_proj_weight");
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, with(o, "bias_k", {1, 1, 8})), "bias_k");
    hmha::Options nobias = opts(8, 2);
    nobias.bias = false;
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(nobias, with(nobias, "in_proj_bias", {24})), "in_proj_bias");
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(nobias, with(nobias, "out_proj.bias", {8})), "out_proj.bias");
    hmha::Options separate = opts(8, 2);
    separate.kdim = 3;
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(separate, with(separate, "in_proj_weight", {24, 8})),
                         "in_proj_weight");
}

TEST_CASE("errors: wrong weight shapes or dtypes name the tensor with expected and actual shape", "[errors]") {
    hmha::Options o = opts(12, 3);
    o.add_bias_kv = true;
    auto with = [&](const std::string &name, std::vector<int64_t> shape) {
        auto sd = poisoned_state_dict(o);
        sd[name] = poison().tensor(std::move(shape));
        return sd;
    };
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, with("in_proj_weight", {36, 13})), "in_proj_weight", "36", "13");
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, with("in_proj_weight", {12, 36})), "in_proj_weight", "36");
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, with("in_proj_bias", {37})), "in_proj_bias", "36", "37");
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, with("out_proj.weight", {12, 11})), "out_proj.weight", "11");
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, with("out_proj.bias", {12, 1})), "out_proj.bias", "12");
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, with("bias_k", {1, 12})), "bias_k", "12");
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, with("bias_v", {1, 1, 14})), "bias_v", "14");
    // A weight of the wrong dtype.
    auto sd = poisoned_state_dict(o);
    sd["out_proj.weight"] = poison().tensor({12, 12}, hmha::DType::Bool);
    const Outcome r = outcome_of([&] { hmha::MultiheadAttention(o, sd); });
    INFO(r.message);
    CHECK(r.hmha_error);
    CHECK_THAT(r.message, Catch::Matchers::Contains("out_proj.weight"));
    CHECK_THAT(lower(r.message), Catch::Matchers::Contains("bool") && Catch::Matchers::Contains("float"));
}

TEST_CASE("errors: kdim / vdim that disagree with the weights", "[errors]") {
    hmha::Options o = opts(8, 2);
    o.kdim = 5;
    o.vdim = 7;
    auto sd = poisoned_state_dict(o);
    sd["k_proj_weight"] = poison().tensor({8, 6});
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, sd), "k_proj_weight", "5", "6");
    sd = poisoned_state_dict(o);
    sd["v_proj_weight"] = poison().tensor({8, 9});
    CHECK_ERROR_MENTIONS(hmha::MultiheadAttention(o, sd), "v_proj_weight", "7", "9");
    // Options say kdim == vdim == embed_dim (packed) but the weights are separate.
    hmha::Options sep = o;
    const auto separate_sd = poisoned_state_dict(sep);
    const Outcome r = outcome_of([&] { hmha::MultiheadAttention(opts(8, 2), separate_sd); });
    INFO(r.message);
    CHECK(r.hmha_error);
    CHECK((r.message.find("in_proj_weight") != std::string::npos ||
           r.message.find("q_proj_weight") != std::string::npos ||
           r.message.find("k_proj_weight") != std::string::npos));
}

TEST_CASE("errors: Options::from_state_dict without out_proj.weight", "[errors]") {
    auto sd = poisoned_state_dict(opts(8, 2));
    sd.erase("out_proj.weight");
    CHECK_ERROR_MENTIONS(hmha::Options::from_state_dict(sd, 2), "out_proj.weight");
}

TEST_CASE("errors: query key and value of the wrong rank or dtype or feature size", "[errors]") {
    std::mt19937 rng(2);
    const hmha::Options o = opts(8, 2);
    const hmha::MultiheadAttention mha(o, random_state_dict(o, rng));
    auto T = [](std::vector<int64_t> shape, hmha::DType dt = hmha::DType::F32) { return poison().tensor(shape, dt); };
    const hmha::Tensor q = T({3, 2, 8}), k = T({5, 2, 8});

    CHECK_ERROR_MENTIONS(mha.forward(T({13}), k, k), "query", "13");
    CHECK_ERROR_MENTIONS(mha.forward(T({1, 3, 2, 8}), k, k), "query", "(1, 3, 2, 8)");
    CHECK_ERROR_MENTIONS(mha.forward(hmha::Tensor(), k, k), "query");
    CHECK_ERROR_MENTIONS(mha.forward(q, T({5, 8}), T({5, 8})), "key", "(5, 8)");
    CHECK_ERROR_MENTIONS(mha.forward(q, k, T({5, 2, 1, 8})), "value", "(5, 2, 1, 8)");
    CHECK_ERROR_MENTIONS(mha.forward(T({3, 2, 9}), k, k), "query", "8", "9");
    CHECK_ERROR_MENTIONS(mha.forward(q, T({5, 2, 7}), k), "key", "8", "7");
    CHECK_ERROR_MENTIONS(mha.forward(q, k, T({5, 2, 6})), "value", "8", "6");
    CHECK_ERROR_MENTIONS(mha.forward(T({3, 8}), T({5, 11}), T({5, 8})), "key", "8", "11");

    const Outcome r = outcome_of([&] { mha.forward(T({3, 2, 8}, hmha::DType::Bool), k, k); });
    INFO(r.message);
    CHECK(r.hmha_error);
    CHECK_THAT(r.message, Catch::Matchers::Contains("query"));
    CHECK_THAT(lower(r.message), Catch::Matchers::Contains("bool") && Catch::Matchers::Contains("float"));
    CHECK_ERROR_MENTIONS(mha.forward(q, T({5, 2, 8}, hmha::DType::Bool), k), "key");
    CHECK_ERROR_MENTIONS(mha.forward(q, k, T({5, 2, 8}, hmha::DType::Bool)), "value");

    // A tensor that claims elements but has no data.
    CHECK_ERROR_MENTIONS(mha.forward(hmha::Tensor::wrap(nullptr, {3, 2, 8}), k, k), "query", "(3, 2, 8)");
    CHECK_ERROR_MENTIONS(mha.forward(q, k, hmha::Tensor::wrap(nullptr, {5, 2, 8})), "value", "(5, 2, 8)");
    {
        hmha::ForwardOptions f;
        f.attn_mask = hmha::Tensor::wrap(nullptr, {3, 5}, hmha::DType::Bool);
        CHECK_ERROR_MENTIONS(mha.forward(q, k, k, f), "attn_mask", "(3, 5)");
    }

    // kdim / vdim modules check against their own dims.
    hmha::Options kv = opts(8, 2);
    kv.kdim = 5;
    kv.vdim = 3;
    const hmha::MultiheadAttention mkv(kv, random_state_dict(kv, rng));
    CHECK_ERROR_MENTIONS(mkv.forward(q, T({5, 2, 8}), T({5, 2, 3})), "key", "5", "8");
    CHECK_ERROR_MENTIONS(mkv.forward(q, T({5, 2, 5}), T({5, 2, 5})), "value", "3", "5");
}

TEST_CASE("errors: batch and sequence sizes that disagree between query key and value", "[errors]") {
    std::mt19937 rng(3);
    auto T = [](std::vector<int64_t> shape) { return poison().tensor(shape); };
    hmha::Options o = opts(8, 2);
    const auto sd = random_state_dict(o, rng);
    const hmha::MultiheadAttention seq(o, sd);
    // (L, N, E): L=3, N=2, S=5.
    CHECK_ERROR_MENTIONS(seq.forward(T({3, 2, 8}), T({5, 2, 8}), T({6, 2, 8})), "value", "5", "6");
    CHECK_ERROR_MENTIONS(seq.forward(T({3, 2, 8}), T({5, 2, 8}), T({5, 4, 8})), "value", "2", "4");
    CHECK_ERROR_MENTIONS(seq.forward(T({3, 2, 8}), T({5, 7, 8}), T({5, 7, 8})), "key", "2", "7");
    // (N, L, E)
    o.batch_first = true;
    const hmha::MultiheadAttention bf(o, sd);
    CHECK_ERROR_MENTIONS(bf.forward(T({2, 3, 8}), T({4, 5, 8}), T({4, 5, 8})), "key", "2", "4");
    CHECK_ERROR_MENTIONS(bf.forward(T({2, 3, 8}), T({2, 5, 8}), T({2, 6, 8})), "value", "5", "6");
    CHECK_ERROR_MENTIONS(bf.forward(T({2, 3, 8}), T({2, 5, 8}), T({3, 5, 8})), "value", "2", "3");
    // unbatched
    CHECK_ERROR_MENTIONS(seq.forward(T({3, 8}), T({5, 8}), T({6, 8})), "value", "5", "6");
}

TEST_CASE("errors: attn_mask and key_padding_mask of the wrong shape", "[errors]") {
    std::mt19937 rng(4);
    auto T = [](std::vector<int64_t> shape, hmha::DType dt = hmha::DType::F32) { return poison().tensor(shape, dt); };
    const hmha::Options o = opts(8, 2);  // H = 2
    const hmha::MultiheadAttention mha(o, random_state_dict(o, rng));
    const hmha::Tensor q = T({3, 2, 8}), k = T({5, 2, 8});  // L=3, N=2, S=5, N*H=4
    auto with_mask = [&](hmha::Tensor m) {
        hmha::ForwardOptions fo;
        fo.attn_mask = m;
        return fo;
    };
    auto with_pad = [&](hmha::Tensor m) {
        hmha::ForwardOptions fo;
        fo.key_padding_mask = m;
        return fo;
    };
    // 1-D shapes are matched as "(5" since "(5)" and "(5,)" are both fair spellings.
    for (hmha::DType dt : {hmha::DType::F32, hmha::DType::Bool}) {
        INFO("dtype " << hmha::to_string(dt));
        CHECK_ERROR_MENTIONS(mha.forward(q, k, k, with_mask(T({6, 5}, dt))), "attn_mask", "(3, 5)", "(6, 5)");
        CHECK_ERROR_MENTIONS(mha.forward(q, k, k, with_mask(T({3, 9}, dt))), "attn_mask", "(3, 5)", "(3, 9)");
        CHECK_ERROR_MENTIONS(mha.forward(q, k, k, with_mask(T({7, 3, 5}, dt))), "attn_mask", "(4, 3, 5)", "(7, 3, 5)");
        // H instead of N*H for a batched input.
        CHECK_ERROR_MENTIONS(mha.forward(q, k, k, with_mask(T({2, 3, 5}, dt))), "attn_mask", "(4, 3, 5)", "(2, 3, 5)");
        CHECK_ERROR_MENTIONS(mha.forward(q, k, k, with_mask(T({4, 3, 6}, dt))), "attn_mask", "(4, 3, 6)");
        CHECK_ERROR_MENTIONS(mha.forward(q, k, k, with_mask(T({5}, dt))), "attn_mask", "(5");
        CHECK_ERROR_MENTIONS(mha.forward(q, k, k, with_mask(T({2, 2, 3, 5}, dt))), "attn_mask", "(2, 2, 3, 5)");
        // Unbatched: (H, L, S) with H = 2.
        CHECK_ERROR_MENTIONS(mha.forward(T({3, 8}), T({5, 8}), T({5, 8}), with_mask(T({4, 3, 5}, dt))), "attn_mask",
                             "(2, 3, 5)", "(4, 3, 5)");

        CHECK_ERROR_MENTIONS(mha.forward(q, k, k, with_pad(T({2, 6}, dt))), "key_padding_mask", "(2, 5)", "(2, 6)");
        CHECK_ERROR_MENTIONS(mha.forward(q, k, k, with_pad(T({5, 2}, dt))), "key_padding_mask", "(2, 5)", "(5, 2)");
        CHECK_ERROR_MENTIONS(mha.forward(q, k, k, with_pad(T({5}, dt))), "key_padding_mask", "(2, 5)", "(5");
        CHECK_ERROR_MENTIONS(mha.forward(T({3, 8}), T({5, 8}), T({5, 8}), with_pad(T({1, 5}, dt))), "key_padding_mask",
                             "(5", "(1, 5)");
    }
    // hmha::DType has only F32 and Bool, the two dtypes masks accept, so a
    // wrong mask dtype cannot be expressed through this API (the CLI checks
    // file dtypes separately).
}

TEST_CASE("errors: an unavailable device is reported by name", "[errors]") {
    std::mt19937 rng(5);
    CHECK_ERROR_MENTIONS(hmha::parse_device("tpu"), "tpu");
    CHECK_ERROR_MENTIONS(hmha::parse_device("CUDA:7"), "CUDA:7");

    // With no NVIDIA device node CUDA cannot be available, whatever the build.
    const bool maybe_cuda = std::filesystem::exists("/dev/nvidiactl") || std::filesystem::exists("/dev/nvidia0");
    CHECK_NOTHROW(hmha::synchronize(hmha::Device::CPU));
    if (!maybe_cuda) CHECK_ERROR_MENTIONS(hmha::synchronize(hmha::Device::CUDA), "device", "cuda");
    const hmha::Tensor host = random_tensor({2, 3}, rng);
    CHECK(host.to_device(hmha::Device::CPU).f32() == host.f32());
    if (!maybe_cuda) CHECK_ERROR_MENTIONS(host.to_device(hmha::Device::CUDA), "device", "cuda");
    for (hmha::Device dev : {hmha::Device::CUDA, hmha::Device::OpenCL}) {
        hmha::Options o = opts(8, 2);
        o.device = dev;
        const auto sd = random_state_dict(o, rng);
        const Outcome r = outcome_of([&] { construct_and_run(o, sd); });
        INFO("device " << hmha::to_string(dev) << ": " << r.message);
        if (dev == hmha::Device::CUDA && !maybe_cuda) CHECK(r.hmha_error);
        if (r.hmha_error) {
            CHECK_THAT(lower(r.message), Catch::Matchers::Contains(hmha::to_string(dev)));
        } else {
            // The device is there: then it must compute the right thing.
            CHECK(r.message == "<no exception>");
            hmha::MultiheadAttention mha(o, sd);
            const hmha::Tensor q = random_tensor({4, 2, 8}, rng);
            const hmha::ForwardResult got = mha.forward(q, q, q);
            const RefResult ref = reference_forward(o, sd, q, q, q, {});
            CHECK(compare_to_reference(got.attn_output, ref.out_shape, ref.out) == "");
        }
    }
}

TEST_CASE("errors: sizes that overflow int32 indexing are rejected before any data is touched", "[errors]") {
    std::mt19937 rng(6);
    // Weights: embed_dim * kdim elements past INT32_MAX.
    {
        hmha::Options o = opts(4, 1);
        o.kdim = 3000000000LL;
        const Poisoned big(4 * 3000000000ULL * sizeof(float));
        std::map<std::string, hmha::Tensor> sd = poisoned_state_dict(opts(4, 1));
        sd.erase("in_proj_weight");
        sd["q_proj_weight"] = poison().tensor({4, 4});
        sd["k_proj_weight"] = big.tensor({4, 3000000000LL});
        sd["v_proj_weight"] = poison().tensor({4, 4});
        CHECK_ERROR_MENTIONS_ANY(hmha::MultiheadAttention(o, sd), "3000000000", "12000000000");
    }
    {
        const Poisoned big(3ULL * 50000 * 50000 * sizeof(float));
        std::map<std::string, hmha::Tensor> sd;
        sd["in_proj_weight"] = big.tensor({150000, 50000});
        sd["in_proj_bias"] = poison().tensor({150000});
        sd["out_proj.weight"] = big.tensor({50000, 50000});
        sd["out_proj.bias"] = poison().tensor({50000});
        CHECK_ERROR_MENTIONS_ANY(hmha::MultiheadAttention(opts(50000, 1), sd), "50000", "2500000000", "7500000000");
    }

    const hmha::Options o = opts(4, 1);
    const hmha::MultiheadAttention mha(o, random_state_dict(o, rng));
    // query (L=70000, N=70000, E=4): 19.6e9 elements.
    {
        const Poisoned big(70000ULL * 70000 * 4 * sizeof(float));
        const hmha::Tensor q = big.tensor({70000, 70000, 4}), kv = poison().tensor({1, 70000, 4});
        hmha::ForwardOptions fo;
        fo.need_weights = false;
        CHECK_ERROR_MENTIONS_ANY(mha.forward(q, kv, kv, fo), "70000", "19600000000");
        CHECK_ERROR_MENTIONS(mha.forward(q, kv, kv, fo), "query");
    }
    // key (S=600e6, N=1, E=4): 2.4e9 elements.
    {
        const Poisoned big(600000000ULL * 4 * sizeof(float));
        const hmha::Tensor kv = big.tensor({600000000, 1, 4});
        hmha::ForwardOptions fo;
        fo.need_weights = false;
        CHECK_ERROR_MENTIONS_ANY(mha.forward(poison().tensor({3, 1, 4}), kv, kv, fo), "600000000", "2400000000");
    }
    // L = S = 50000: the inputs are small but the weights (N, L, S) are 2.5e9.
    {
        const hmha::Tensor q = poison().tensor({50000, 1, 4});
        CHECK_ERROR_MENTIONS_ANY(mha.forward(q, q, q), "50000", "2500000000");
        // The same with need_weights=false but an (L, S) attn_mask of 2.5e9.
        const Poisoned big(50000ULL * 50000 * sizeof(float));
        hmha::ForwardOptions fo;
        fo.need_weights = false;
        fo.attn_mask = big.tensor({50000, 50000});
        CHECK_ERROR_MENTIONS(mha.forward(q, q, q, fo), "attn_mask");
    }
}

TEST_CASE("errors: a failed call leaves the module usable and the inputs untouched", "[errors]") {
    // Every check above ran on poisoned inputs, so no kernel touched them; here
    // the same module keeps producing correct results after rejected calls.
    std::mt19937 rng(7);
    hmha::Options o = opts(8, 2);
    const auto sd = random_state_dict(o, rng);
    const hmha::MultiheadAttention mha(o, sd);
    const hmha::Tensor q = random_tensor({3, 2, 8}, rng), k = random_tensor({5, 2, 8}, rng);
    const std::vector<float> q0(q.f32(), q.f32() + q.numel());
    hmha::ForwardOptions bad;
    bad.attn_mask = random_tensor({3, 4}, rng);
    CHECK(outcome_of([&] { mha.forward(q, k, k, bad); }).hmha_error);
    CHECK(outcome_of([&] { mha.forward(q, random_tensor({5, 2, 7}, rng), k); }).hmha_error);
    CHECK(std::vector<float>(q.f32(), q.f32() + q.numel()) == q0);
    const hmha::ForwardResult got = mha.forward(q, k, k);
    const RefResult ref = reference_forward(o, sd, q, k, k, {});
    CHECK(compare_to_reference(got.attn_output, ref.out_shape, ref.out) == "");
    CHECK(compare_to_reference(*got.attn_output_weights, ref.w_shape, ref.weights) == "");
}

TEST_CASE("errors: device tensors must be on the module's device and hold an allocation", "[errors]") {
    std::mt19937 rng(5);
    const hmha::Options o = opts(8, 2);  // a CPU module
    const hmha::MultiheadAttention mha(o, random_state_dict(o, rng));
    // Poisoned memory: any read before validation fails the test.
    hmha::Tensor host = poison().tensor({3, 2, 8}, hmha::DType::F32);
    // The handle is never dereferenced: validation rejects it first.
    hmha::Tensor on_gpu = hmha::Tensor::wrap_device(hmha::Device::CUDA, 0x1000, {3, 2, 8});
    CHECK_ERROR_MENTIONS(mha.forward(on_gpu, host, host), "query", "cpu", "cuda");
    CHECK_ERROR_MENTIONS(mha.forward(host, host, on_gpu), "value", "cpu", "cuda");
    CHECK_ERROR_MENTIONS(hmha::Tensor::wrap_device(hmha::Device::CPU, 0x1000, {2}), "wrap_device", "cpu");
    CHECK_ERROR_MENTIONS(hmha::Tensor::wrap_device(hmha::Device::OpenCL, 0, {2}), "wrap_device", "null");
}
