// hmha::MultiheadAttention against real torch.nn.MultiheadAttention: every
// fixture in tests/golden/ (made once by tests/golden/make_golden.py, see its
// README) holds a module's state_dict, the forward inputs and options, and what
// PyTorch returned. Each fixture is its own section, so a failure names it.
//
// Besides the options as stored, each fixture is also run with
// need_weights=false (attn_output must not change: the fused path, also with
// Scratch::PerHead) and, when it holds per-head weights, with
// average_attn_weights=true (their mean over heads).
#include <catch2/catch.hpp>

#include "device.h"
#include <hmha/hmha.h>
#include <hmha/safetensors.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

// |got - expected| <= kAtol + kRtol * |expected|, elementwise.
constexpr double kAtol = 1e-5;
constexpr double kRtol = 1e-4;
constexpr size_t kMinFixtures = 20;

// Tensors of a fixture that are not the module's state_dict.
const std::set<std::string> kNotWeights = {"query",     "key",         "value",
                                           "attn_mask", "attn_output", "attn_output_weights",
                                           "key_padding_mask"};

// The fixtures' folder: HMHA_GOLDEN_DIR in the environment (a test binary carried
// to another machine, bench/gpu/run.sh), else the source tree it was built from.
std::string golden_dir() {
    const char *env = std::getenv("HMHA_GOLDEN_DIR");
    return env && *env ? env : HMHA_GOLDEN_DIR;
}

std::vector<fs::path> fixture_paths() {
    std::vector<fs::path> paths;
    std::error_code ec;
    for (const auto &entry : fs::directory_iterator(golden_dir(), ec))
        if (entry.is_regular_file() && entry.path().extension() == ".safetensors") paths.push_back(entry.path());
    std::sort(paths.begin(), paths.end());
    return paths;
}

std::string shape_str(const std::vector<int64_t> &shape) {
    std::ostringstream s;
    s << "(";
    for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
    s << (shape.size() == 1 ? ",)" : ")");
    return s.str();
}

std::string index_str(int64_t flat, const std::vector<int64_t> &shape) {
    std::vector<int64_t> idx(shape.size());
    for (size_t d = shape.size(); d-- > 0;) {
        idx[d] = shape[d] ? flat % shape[d] : 0;
        flat = shape[d] ? flat / shape[d] : 0;
    }
    return shape_str(idx);
}

// Empty when `got` is F32, has `expected`'s shape and every element is finite
// and within tolerance; otherwise what differs, with the first mismatches.
std::string compare(const hmha::Tensor &got, const std::vector<int64_t> &shape, const std::vector<double> &expected,
                    size_t max_reported = 10) {
    std::ostringstream s;
    if (got.dtype() != hmha::DType::F32) return std::string("dtype ") + hmha::to_string(got.dtype()) + ", expected F32";
    if (got.shape() != shape) return "shape " + shape_str(got.shape()) + ", expected " + shape_str(shape);
    size_t bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < got.numel(); ++i) {
        const double g = got.at(i), e = expected[(size_t)i], err = std::fabs(g - e);
        const double bound = kAtol + kRtol * std::fabs(e);
        if (std::isfinite(g) && err <= bound) continue;
        if (bad < max_reported)
            s << "\n  " << index_str(i, shape) << " flat " << i << ": got " << g << ", expected " << e << " (|diff| "
              << err << " > " << bound << ")";
        worst = std::isfinite(err) ? std::max(worst, err) : err;
        ++bad;
    }
    if (!bad) return {};
    std::ostringstream head;
    head.precision(9);
    head << bad << " of " << got.numel() << " elements out of tolerance (worst |diff| " << worst << ")" << s.str();
    return head.str();
}

std::vector<double> values(const hmha::Tensor &t) {
    std::vector<double> v((size_t)t.numel());
    for (int64_t i = 0; i < t.numel(); ++i) v[(size_t)i] = t.at(i);
    return v;
}

// Mean over the head axis: (N, H, L, S') -> (N, L, S'), (H, L, S') -> (L, S').
std::vector<double> mean_over_heads(const hmha::Tensor &per_head, std::vector<int64_t> &shape) {
    const auto &in = per_head.shape();
    const int64_t head_axis = (int64_t)in.size() - 3;
    const int64_t outer = head_axis ? in[0] : 1, H = in[(size_t)head_axis];
    const int64_t inner = in[in.size() - 2] * in[in.size() - 1];
    shape = in;
    shape.erase(shape.begin() + head_axis);
    std::vector<double> out((size_t)(outer * inner), 0.0);
    for (int64_t o = 0; o < outer; ++o)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < inner; ++i) out[(size_t)(o * inner + i)] += per_head.at((o * H + h) * inner + i);
    for (double &x : out) x /= (double)H;
    return out;
}

std::vector<uint8_t> snapshot(const hmha::Tensor &t) {
    const uint8_t *p = t.dtype() == hmha::DType::F32 ? reinterpret_cast<const uint8_t *>(t.f32()) : t.bytes();
    return std::vector<uint8_t>(p, p + t.nbytes());
}

struct Fixture {
    std::string name;
    std::map<std::string, hmha::Tensor> tensors;

    explicit Fixture(const fs::path &path)
        : name(path.stem().string()), tensors(hmha::safetensors::load(path.string())) {}

    bool has(const std::string &key) const { return tensors.count(key) != 0; }
    const hmha::Tensor &get(const std::string &key) const {
        auto it = tensors.find(key);
        if (it == tensors.end()) FAIL("fixture " << name << " has no tensor '" << key << "'");
        return it->second;
    }
    double opt(const std::string &key) const {
        const hmha::Tensor &t = get("opt." + key);
        REQUIRE(t.numel() == 1);
        return t.at(0);
    }
    bool flag(const std::string &key) const { return opt(key) != 0.0; }

    std::map<std::string, hmha::Tensor> state_dict() const {
        std::map<std::string, hmha::Tensor> sd;
        for (const auto &[key, t] : tensors)
            if (!kNotWeights.count(key) && key.rfind("opt.", 0) != 0) sd.emplace(key, t);
        return sd;
    }
};

void check_fixture(const fs::path &path) {
    const Fixture fx(path);
    const auto state_dict = fx.state_dict();
    const int64_t num_heads = (int64_t)fx.opt("num_heads");

    hmha::Options options = hmha::Options::from_state_dict(state_dict, num_heads);
    options.device = test_device();
    // What from_state_dict must infer, as the module had it.
    CHECK(options.embed_dim == (int64_t)fx.opt("embed_dim"));
    CHECK(options.num_heads == num_heads);
    CHECK((options.kdim ? options.kdim : options.embed_dim) == (int64_t)fx.opt("kdim"));
    CHECK((options.vdim ? options.vdim : options.embed_dim) == (int64_t)fx.opt("vdim"));
    CHECK(options.bias == fx.flag("bias"));
    CHECK(options.add_bias_kv == fx.flag("add_bias_kv"));
    options.batch_first = fx.flag("batch_first");
    options.add_zero_attn = fx.flag("add_zero_attn");
    const hmha::MultiheadAttention mha(options, state_dict);

    const hmha::Tensor &query = fx.get("query");
    // Self-attention fixtures pass one tensor as query, key and value (aliasing).
    const bool same_qkv = fx.flag("same_qkv");
    const hmha::Tensor &key = same_qkv ? query : fx.get("key");
    const hmha::Tensor &value = same_qkv ? query : fx.get("value");
    if (same_qkv) {
        REQUIRE(snapshot(fx.get("key")) == snapshot(query));
        REQUIRE(snapshot(fx.get("value")) == snapshot(query));
    }

    hmha::ForwardOptions fwd;
    if (fx.has("key_padding_mask")) fwd.key_padding_mask = fx.get("key_padding_mask");
    if (fx.has("attn_mask")) fwd.attn_mask = fx.get("attn_mask");
    fwd.need_weights = fx.flag("need_weights");
    fwd.average_attn_weights = fx.flag("average_attn_weights");
    fwd.is_causal = fx.flag("is_causal");

    const hmha::Tensor &expected_out = fx.get("attn_output");
    const std::vector<double> expected_out_values = values(expected_out);
    REQUIRE(fx.has("attn_output_weights") == fwd.need_weights);

    std::vector<std::pair<std::string, std::vector<uint8_t>>> inputs_before;
    for (const char *k : {"query", "key", "value", "key_padding_mask", "attn_mask"})
        if (fx.has(k)) inputs_before.emplace_back(k, snapshot(fx.get(k)));

    auto run = [&](const hmha::ForwardOptions &f) {
        hmha::ForwardResult r = mha.forward(query, key, value, f);
        CHECK(compare(r.attn_output, expected_out.shape(), expected_out_values) == "");
        return r;
    };

    {
        INFO("forward with the fixture's options");
        hmha::ForwardResult r = run(fwd);
        if (fwd.need_weights) {
            REQUIRE(r.attn_output_weights.has_value());
            const hmha::Tensor &w = fx.get("attn_output_weights");
            CHECK(compare(*r.attn_output_weights, w.shape(), values(w)) == "");
        } else {
            CHECK_FALSE(r.attn_output_weights.has_value());
        }
    }
    if (fwd.need_weights) {
        INFO("forward with need_weights=false: same attn_output, no weights");
        hmha::ForwardOptions f = fwd;
        f.need_weights = false;
        hmha::ForwardResult r = run(f);
        CHECK_FALSE(r.attn_output_weights.has_value());
    }
    {
        INFO("need_weights=false with Scratch::PerHead (Q and the attention output in the output tensor)");
        hmha::Options per_head = options;
        per_head.scratch = hmha::Scratch::PerHead;
        const hmha::MultiheadAttention mha_per_head(per_head, state_dict);
        hmha::ForwardOptions f = fwd;
        f.need_weights = false;
        hmha::ForwardResult r = mha_per_head.forward(query, key, value, f);
        CHECK(compare(r.attn_output, expected_out.shape(), expected_out_values) == "");
        CHECK_FALSE(r.attn_output_weights.has_value());
    }
    if (fwd.need_weights && !fwd.average_attn_weights) {
        INFO("forward with average_attn_weights=true: the mean of the per-head weights");
        hmha::ForwardOptions f = fwd;
        f.average_attn_weights = true;
        hmha::ForwardResult r = run(f);
        REQUIRE(r.attn_output_weights.has_value());
        std::vector<int64_t> shape;
        const std::vector<double> mean = mean_over_heads(fx.get("attn_output_weights"), shape);
        CHECK(compare(*r.attn_output_weights, shape, mean) == "");
    }

    for (const auto &[k, bytes] : inputs_before) {
        INFO("input '" << k << "' must not be modified by forward");
        CHECK(snapshot(fx.get(k)) == bytes);
    }
}

}  // namespace

TEST_CASE("forward matches torch.nn.MultiheadAttention on every golden fixture", "[golden]") {
    const std::vector<fs::path> paths = fixture_paths();
    INFO("fixtures in " << golden_dir() << " (regenerate with tests/golden/make_golden.py)");
    REQUIRE(paths.size() >= kMinFixtures);
    for (const fs::path &path : paths) {
        DYNAMIC_SECTION(path.stem().string()) {
            INFO("fixture " << path.string());
            check_fixture(path);
        }
    }
}
