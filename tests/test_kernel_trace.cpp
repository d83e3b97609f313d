// The kernel trace (HMHA_TRACE_KERNELS=1, runtime/src/kernels.cpp): each call
// a forward makes is counted and timed, and the outputs are those of an
// untraced forward. Tagged [semantics] so that it runs on every device family.
#include <catch2/catch.hpp>

#include <cstring>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "device.h"
#include "hmha/hmha.h"
#include "reference.h"

namespace hmha::detail {
// runtime/src/kernels.cpp: switch the trace on or off (clearing it), and its table.
void set_kernel_trace(bool on);
std::string kernel_trace_report();
}  // namespace hmha::detail

namespace {

// The calls per forward that the report lists for `name`; -1 if absent.
double calls_of(const std::string &report, const std::string &name) {
    std::istringstream in(report);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(name + " ", 0) == 0) return std::stod(line.substr(22, 9));
    }
    return -1;
}

// The forwards the report's first line counts.
long forwards_of(const std::string &report) {
    return std::stol(report.substr(std::strlen("hmha kernel trace: ")));
}

}  // namespace

TEST_CASE("kernel trace: every call of a forward counted, outputs unchanged", "[semantics]") {
    const int64_t E = 16, H = 2, L = 5, S = 7, N = 2;
    std::mt19937 rng(7);
    hmha::Options o;
    o.device = test_device();
    o.embed_dim = E;
    o.num_heads = H;
    hmha::MultiheadAttention mha(o, random_state_dict(o, rng));
    const hmha::Tensor q = random_tensor({L, N, E}, rng), kv = random_tensor({S, N, E}, rng);
    hmha::ForwardOptions no_weights, need_weights;
    no_weights.need_weights = false;
    need_weights.need_weights = true;

    const hmha::ForwardResult plain = mha.forward(q, kv, kv, no_weights);
    hmha::detail::set_kernel_trace(true);
    const hmha::ForwardResult traced = mha.forward(q, kv, kv, no_weights);
    mha.forward(q, kv, kv, no_weights);
    const std::string fused = hmha::detail::kernel_trace_report();
    hmha::detail::set_kernel_trace(true);  // cleared
    const hmha::ForwardResult weights = mha.forward(q, kv, kv, need_weights);
    const std::string with_weights = hmha::detail::kernel_trace_report();
    hmha::detail::set_kernel_trace(false);
    hmha::detail::set_kernel_trace(false);
    INFO(fused << with_weights);

    REQUIRE(traced.attn_output.numel() == plain.attn_output.numel());
    CHECK(std::memcmp(traced.attn_output.f32(), plain.attn_output.f32(), plain.attn_output.nbytes()) == 0);
    REQUIRE(weights.attn_output_weights.has_value());
    CHECK(forwards_of(fused) == 2);
    CHECK(forwards_of(with_weights) == 1);
    // Q, K and V projected (one call each: query and key/value differ) and
    // the output projection: at least 4 linear calls a forward, and the
    // attention kernel; the time after the last call once a forward.
    CHECK(calls_of(fused, "linear") >= 4);
    CHECK(calls_of(fused, "sdpa") >= 1);
    CHECK(calls_of(fused, "(rest of forward)") == 1);
    CHECK(calls_of(with_weights, "linear") >= 4);
    CHECK(calls_of(with_weights, "sdpa") == -1);
    CHECK(calls_of(with_weights, "(rest of forward)") == 1);
    const double softmax = std::max({calls_of(with_weights, "masked_softmax"),
                                     calls_of(with_weights, "softmax_attend"),
                                     calls_of(with_weights, "softmax_attend_mean")});
    CHECK(softmax >= 1);
}
