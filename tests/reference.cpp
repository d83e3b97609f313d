// Float64 reference of nn.MultiheadAttention.forward (SPEC.md §1-2). See
// reference.h for why it is separate from the runtime and why it is naive.
#include "reference.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>

namespace {

void require(bool ok, const std::string &what) {
    if (!ok) throw std::invalid_argument("reference_forward: " + what);
}

std::string shape_of(const hmha::Tensor &t) {
    std::string s = "(";
    for (size_t i = 0; i < t.shape().size(); ++i) s += (i ? ", " : "") + std::to_string(t.shape()[i]);
    return s + ")";
}

// Reads element i of a tensor as double; bool tensors read as 0 / 1.
double read(const hmha::Tensor &t, int64_t i) {
    if (t.dtype() == hmha::DType::Bool) return t.bytes()[i] != 0 ? 1.0 : 0.0;
    return (double)t.f32()[i];
}

const hmha::Tensor &weight(const std::map<std::string, hmha::Tensor> &sd, const std::string &name,
                           std::vector<int64_t> shape) {
    auto it = sd.find(name);
    require(it != sd.end(), "state_dict lacks " + name);
    require(it->second.shape() == shape, name + " has shape " + shape_of(it->second));
    require(it->second.dtype() == hmha::DType::F32, name + " is not F32");
    return it->second;
}

// y[r][o] = sum_i W[row0 + o][i] * x[r][i] + b[row0 + o], for the rows of an
// input of `in_dim` columns; W is [*, in_dim] row-major.
std::vector<double> linear(const std::vector<double> &x, int64_t rows, int64_t in_dim, const hmha::Tensor &w,
                           int64_t row0, int64_t out_dim, const hmha::Tensor *b) {
    std::vector<double> y((size_t)(rows * out_dim));
    const float *wp = w.f32();
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t o = 0; o < out_dim; ++o) {
            double acc = b ? (double)b->f32()[row0 + o] : 0.0;
            const float *wrow = wp + (row0 + o) * in_dim;
            for (int64_t i = 0; i < in_dim; ++i) acc += (double)wrow[i] * x[(size_t)(r * in_dim + i)];
            y[(size_t)(r * out_dim + o)] = acc;
        }
    }
    return y;
}

}  // namespace

RefResult reference_forward(const hmha::Options &opt, const std::map<std::string, hmha::Tensor> &sd,
                            const hmha::Tensor &query, const hmha::Tensor &key, const hmha::Tensor &value,
                            const hmha::ForwardOptions &fo) {
    const int64_t E = opt.embed_dim, H = opt.num_heads;
    require(E > 0 && H > 0 && E % H == 0, "embed_dim must be a positive multiple of num_heads");
    const int64_t D = E / H;
    const int64_t kdim = opt.kdim ? opt.kdim : E, vdim = opt.vdim ? opt.vdim : E;

    // ---- shapes: everything is handled internally as (N, seq, features) ----
    const bool unbatched = query.dim() == 2;
    require(query.dim() == (unbatched ? 2 : 3) && key.dim() == query.dim() && value.dim() == query.dim(),
            "query/key/value ranks " + shape_of(query) + shape_of(key) + shape_of(value));
    const bool bf = opt.batch_first && !unbatched;
    int64_t L, S, N;
    if (unbatched) {
        L = query.size(0), S = key.size(0), N = 1;
    } else if (bf) {
        N = query.size(0), L = query.size(1), S = key.size(1);
    } else {
        L = query.size(0), N = query.size(1), S = key.size(0);
    }
    require(query.size(-1) == E && key.size(-1) == kdim && value.size(-1) == vdim, "feature sizes");
    require(std::vector<int64_t>(key.shape().begin(), key.shape().end() - 1) ==
                std::vector<int64_t>(value.shape().begin(), value.shape().end() - 1),
            "key/value batch or length differ");
    require(unbatched || (bf ? key.size(0) : key.size(1)) == N, "query/key batch differ");

    // Element (n, t, c) of a (seq, N, C) / (N, seq, C) / (seq, C) tensor.
    auto gather = [&](const hmha::Tensor &t, int64_t seq, int64_t C) {
        std::vector<double> out((size_t)(N * seq * C));
        for (int64_t n = 0; n < N; ++n)
            for (int64_t s = 0; s < seq; ++s) {
                const int64_t row = unbatched ? s : bf ? n * seq + s : s * N + n;
                for (int64_t c = 0; c < C; ++c) out[(size_t)((n * seq + s) * C + c)] = read(t, row * C + c);
            }
        return out;
    };
    const std::vector<double> xq = gather(query, L, E), xk = gather(key, S, kdim), xv = gather(value, S, vdim);

    // ---- input projections ----
    const hmha::Tensor *bias = opt.bias ? &weight(sd, "in_proj_bias", {3 * E}) : nullptr;
    std::vector<double> q, k, v;  // (N, L, E), (N, S, E), (N, S, E)
    if (kdim == E && vdim == E) {
        const hmha::Tensor &w = weight(sd, "in_proj_weight", {3 * E, E});
        q = linear(xq, N * L, E, w, 0, E, bias);
        k = linear(xk, N * S, E, w, E, E, bias);
        v = linear(xv, N * S, E, w, 2 * E, E, bias);
    } else {
        // The separate weights have their own row 0; the bias stays packed.
        const hmha::Tensor &wq = weight(sd, "q_proj_weight", {E, E});
        const hmha::Tensor &wk = weight(sd, "k_proj_weight", {E, kdim});
        const hmha::Tensor &wv = weight(sd, "v_proj_weight", {E, vdim});
        q = linear(xq, N * L, E, wq, 0, E, nullptr);
        k = linear(xk, N * S, kdim, wk, 0, E, nullptr);
        v = linear(xv, N * S, vdim, wv, 0, E, nullptr);
        if (bias) {
            const float *b = bias->f32();
            for (int64_t r = 0; r < N * L; ++r)
                for (int64_t e = 0; e < E; ++e) q[(size_t)(r * E + e)] += b[e];
            for (int64_t r = 0; r < N * S; ++r)
                for (int64_t e = 0; e < E; ++e) {
                    k[(size_t)(r * E + e)] += b[E + e];
                    v[(size_t)(r * E + e)] += b[2 * E + e];
                }
        }
    }

    // ---- appended key/value positions: bias_kv, then zero_attn ----
    const int64_t Sp = S + (opt.add_bias_kv ? 1 : 0) + (opt.add_zero_attn ? 1 : 0);
    std::vector<double> kk((size_t)(N * Sp * E), 0.0), vv((size_t)(N * Sp * E), 0.0);
    for (int64_t n = 0; n < N; ++n) {
        for (int64_t s = 0; s < S; ++s)
            for (int64_t e = 0; e < E; ++e) {
                kk[(size_t)((n * Sp + s) * E + e)] = k[(size_t)((n * S + s) * E + e)];
                vv[(size_t)((n * Sp + s) * E + e)] = v[(size_t)((n * S + s) * E + e)];
            }
        if (opt.add_bias_kv) {
            const hmha::Tensor &bk = weight(sd, "bias_k", {1, 1, E});
            const hmha::Tensor &bv = weight(sd, "bias_v", {1, 1, E});
            for (int64_t e = 0; e < E; ++e) {
                kk[(size_t)((n * Sp + S) * E + e)] = bk.f32()[e];
                vv[(size_t)((n * Sp + S) * E + e)] = bv.f32()[e];
            }
        }
        // The zero_attn position is already 0 from the initialisation.
    }

    // ---- masks (they cover the S original keys only) ----
    const hmha::Tensor *am = fo.attn_mask ? &*fo.attn_mask : nullptr;
    const hmha::Tensor *kpm = fo.key_padding_mask ? &*fo.key_padding_mask : nullptr;
    if (am) {
        const std::vector<int64_t> two{L, S}, three{unbatched ? H : N * H, L, S};
        require(am->shape() == two || am->shape() == three, "attn_mask shape " + shape_of(*am));
    }
    if (kpm) {
        const std::vector<int64_t> want = unbatched ? std::vector<int64_t>{S} : std::vector<int64_t>{N, S};
        require(kpm->shape() == want, "key_padding_mask shape " + shape_of(*kpm));
    }

    // ---- attention, one (n, h, query row) at a time ----
    const double scale = 1.0 / std::sqrt((double)D);
    const double ninf = -std::numeric_limits<double>::infinity();
    std::vector<double> attn((size_t)(N * L * E), 0.0);        // heads concatenated, (N, L, E)
    std::vector<double> w_all((size_t)(N * H * L * Sp), 0.0);  // per head, (N, H, L, S')
    std::vector<double> score((size_t)Sp);
    std::vector<char> hidden((size_t)Sp);
    for (int64_t n = 0; n < N; ++n)
        for (int64_t h = 0; h < H; ++h)
            for (int64_t i = 0; i < L; ++i) {
                const double *qi = &q[(size_t)((n * L + i) * E + h * D)];
                bool any = false;
                double mx = ninf;
                for (int64_t j = 0; j < Sp; ++j) {
                    const double *kj = &kk[(size_t)((n * Sp + j) * E + h * D)];
                    double dot = 0.0;
                    for (int64_t d = 0; d < D; ++d) dot += qi[d] * scale * kj[d];
                    bool hid = false;
                    if (j < S) {
                        if (am) {
                            const int64_t idx = am->dim() == 2 ? i * S + j : ((n * H + h) * L + i) * S + j;
                            if (am->dtype() == hmha::DType::Bool)
                                hid = hid || read(*am, idx) != 0.0;
                            else
                                dot += read(*am, idx);
                        }
                        if (kpm) {
                            const int64_t idx = n * S + j;
                            if (kpm->dtype() == hmha::DType::Bool)
                                hid = hid || read(*kpm, idx) != 0.0;
                            else
                                dot += read(*kpm, idx);
                        }
                        if (fo.is_causal && j > i) hid = true;
                    }
                    // A float mask of -inf hides the key just like a bool one.
                    if (std::isnan(dot) || dot == ninf) hid = true;
                    hidden[(size_t)j] = hid;
                    score[(size_t)j] = dot;
                    if (!hid) {
                        any = true;
                        mx = std::max(mx, dot);
                    }
                }
                // A fully hidden row keeps weights 0 and output 0 (SPEC §2).
                if (!any) continue;
                double sum = 0.0;
                for (int64_t j = 0; j < Sp; ++j)
                    if (!hidden[(size_t)j]) sum += std::exp(score[(size_t)j] - mx);
                double *wrow = &w_all[(size_t)(((n * H + h) * L + i) * Sp)];
                for (int64_t j = 0; j < Sp; ++j)
                    wrow[j] = hidden[(size_t)j] ? 0.0 : std::exp(score[(size_t)j] - mx) / sum;
                double *orow = &attn[(size_t)((n * L + i) * E + h * D)];
                for (int64_t j = 0; j < Sp; ++j) {
                    if (wrow[j] == 0.0) continue;
                    const double *vj = &vv[(size_t)((n * Sp + j) * E + h * D)];
                    for (int64_t d = 0; d < D; ++d) orow[d] += wrow[j] * vj[d];
                }
            }

    // ---- output projection and layout ----
    const hmha::Tensor &wo = weight(sd, "out_proj.weight", {E, E});
    const hmha::Tensor *bo = opt.bias ? &weight(sd, "out_proj.bias", {E}) : nullptr;
    const std::vector<double> y = linear(attn, N * L, E, wo, 0, E, bo);

    RefResult r;
    r.out_shape = unbatched ? std::vector<int64_t>{L, E}
                  : bf      ? std::vector<int64_t>{N, L, E}
                            : std::vector<int64_t>{L, N, E};
    r.out.assign((size_t)(N * L * E), 0.0);
    for (int64_t n = 0; n < N; ++n)
        for (int64_t i = 0; i < L; ++i) {
            const int64_t row = unbatched ? i : bf ? n * L + i : i * N + n;
            for (int64_t e = 0; e < E; ++e) r.out[(size_t)(row * E + e)] = y[(size_t)((n * L + i) * E + e)];
        }

    r.has_weights = fo.need_weights;
    if (fo.need_weights) {
        if (fo.average_attn_weights) {
            r.w_shape = unbatched ? std::vector<int64_t>{L, Sp} : std::vector<int64_t>{N, L, Sp};
            r.weights.assign((size_t)(N * L * Sp), 0.0);
            for (int64_t n = 0; n < N; ++n)
                for (int64_t h = 0; h < H; ++h)
                    for (int64_t i = 0; i < L; ++i)
                        for (int64_t j = 0; j < Sp; ++j)
                            r.weights[(size_t)((n * L + i) * Sp + j)] +=
                                w_all[(size_t)(((n * H + h) * L + i) * Sp + j)] / (double)H;
        } else {
            r.w_shape = unbatched ? std::vector<int64_t>{H, L, Sp} : std::vector<int64_t>{N, H, L, Sp};
            r.weights = std::move(w_all);
        }
    }
    return r;
}

// ---- helpers shared by the tests --------------------------------------------

bool within_tolerance(double got, double ref) {
    if (!std::isfinite(got)) return false;
    const double err = std::fabs(got - ref);
    return std::fabs(ref) >= 1.0 ? err <= 1e-4 * std::fabs(ref) : err <= 1e-5;
}

std::string compare_to_reference(const hmha::Tensor &got, const std::vector<int64_t> &ref_shape,
                                 const std::vector<double> &ref, size_t max_reported) {
    auto shape_str = [](const std::vector<int64_t> &s) {
        std::string r = "(";
        for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
        return r + ")";
    };
    if (got.shape() != ref_shape) return "shape " + shape_str(got.shape()) + ", reference " + shape_str(ref_shape);
    if (got.dtype() != hmha::DType::F32) return "dtype is not F32";
    if ((size_t)got.numel() != ref.size()) return "reference has " + std::to_string(ref.size()) + " elements";
    if (ref.empty()) return "";
    const float *g = got.f32();
    if (!g) return "no data";
    std::string report;
    size_t bad = 0;
    double worst = 0.0;
    for (size_t i = 0; i < ref.size(); ++i) {
        if (within_tolerance(g[i], ref[i])) continue;
        worst = std::max(worst, std::fabs((double)g[i] - ref[i]));
        if (bad++ < max_reported) {
            // The multi-index makes it obvious which row / head / key is off.
            std::vector<int64_t> idx(ref_shape.size());
            int64_t rest = (int64_t)i;
            for (size_t d = ref_shape.size(); d-- > 0;) {
                idx[d] = ref_shape[d] ? rest % ref_shape[d] : 0;
                rest = ref_shape[d] ? rest / ref_shape[d] : 0;
            }
            char buf[160];
            std::snprintf(buf, sizeof buf, " [%zu] got %.9g ref %.9g;", i, (double)g[i], ref[i]);
            report += "\n  at " + shape_str(idx) + buf;
        }
    }
    if (!bad) return "";
    char head[160];
    std::snprintf(head, sizeof head, "%zu of %zu elements out of tolerance (max abs err %.3g), first:", bad, ref.size(),
                  worst);
    return head + report;
}

std::vector<float> tensor_values(const hmha::Tensor &t) {
    if (t.numel() == 0) return {};
    return std::vector<float>(t.f32(), t.f32() + t.numel());
}

hmha::Tensor random_tensor(std::vector<int64_t> shape, std::mt19937 &rng, float lo, float hi) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v((size_t)n);
    for (float &x : v) x = dist(rng);
    return hmha::Tensor::from_floats(std::move(shape), v);
}

std::map<std::string, hmha::Tensor> random_state_dict(const hmha::Options &o, std::mt19937 &rng) {
    const int64_t E = o.embed_dim, kdim = o.kdim ? o.kdim : E, vdim = o.vdim ? o.vdim : E;
    auto w = [&](int64_t rows, int64_t cols) {
        const float b = 1.0f / std::sqrt((float)cols);
        return random_tensor({rows, cols}, rng, -b, b);
    };
    std::map<std::string, hmha::Tensor> sd;
    if (kdim == E && vdim == E) {
        sd["in_proj_weight"] = w(3 * E, E);
    } else {
        sd["q_proj_weight"] = w(E, E);
        sd["k_proj_weight"] = w(E, kdim);
        sd["v_proj_weight"] = w(E, vdim);
    }
    sd["out_proj.weight"] = w(E, E);
    if (o.bias) {
        sd["in_proj_bias"] = random_tensor({3 * E}, rng, -0.5f, 0.5f);
        sd["out_proj.bias"] = random_tensor({E}, rng, -0.5f, 0.5f);
    }
    if (o.add_bias_kv) {
        sd["bias_k"] = random_tensor({1, 1, E}, rng);
        sd["bias_v"] = random_tensor({1, 1, E}, rng);
    }
    return sd;
}
