// An independent float64 reference of nn.MultiheadAttention's forward (eval
// mode), written from SPEC.md §1-2 alone. It shares no code with runtime/src:
// hmha::Tensor, Options and ForwardOptions are used only as input containers,
// so a misreading of the contract in the runtime cannot hide in both.
//
// It is deliberately naive (plain loops, one row at a time) so it can be
// checked by reading. It assumes valid inputs; it throws std::invalid_argument
// on inconsistent shapes only so that a bug in a test shows up as one.
#pragma once

#include <hmha/hmha.h>

#include <cstdint>
#include <map>
#include <random>
#include <string>
#include <vector>

struct RefResult {
    std::vector<int64_t> out_shape;  // (L, N, E), (N, L, E) or (L, E)
    std::vector<double> out;
    std::vector<int64_t> w_shape;  // (N, L, S'), (N, H, L, S'), (L, S') or (H, L, S')
    std::vector<double> weights;
    bool has_weights = false;
};

RefResult reference_forward(const hmha::Options &options, const std::map<std::string, hmha::Tensor> &state_dict,
                            const hmha::Tensor &query, const hmha::Tensor &key, const hmha::Tensor &value,
                            const hmha::ForwardOptions &forward_options);

// ---- helpers shared by the tests that compare against the reference --------

// SPEC.md §2: within 1e-4 relative where |ref| >= 1, 1e-5 absolute below.
bool within_tolerance(double got, double ref);

// Empty when `got` is an F32 tensor of shape `ref_shape` whose elements are all
// finite and within tolerance of `ref`; otherwise says what differs, listing
// the first `max_reported` mismatches as (multi-index) flat: got vs ref.
std::string compare_to_reference(const hmha::Tensor &got, const std::vector<int64_t> &ref_shape,
                                 const std::vector<double> &ref, size_t max_reported = 8);

// A float32 host tensor's elements, in order (none when it has none).
std::vector<float> tensor_values(const hmha::Tensor &t);

// Uniform in [lo, hi), float32, owning.
hmha::Tensor random_tensor(std::vector<int64_t> shape, std::mt19937 &rng, float lo = -1.0f, float hi = 1.0f);

// Every tensor `options` calls for, PyTorch's names and shapes, drawn like
// PyTorch's initialisation (weights within 1/sqrt(fan_in)); biases are nonzero
// on purpose so that a dropped bias shows.
std::map<std::string, hmha::Tensor> random_state_dict(const hmha::Options &options, std::mt19937 &rng);
