#include "kernel_mha.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <stdexcept>

#include "../../runtime/src/batch_passes.h"
#include "HalideBuffer.h"
#include "hmha/hmha.h"

namespace hmha_bench {

namespace {

using HBuf = Halide::Runtime::Buffer<float>;
using HBufU8 = Halide::Runtime::Buffer<uint8_t>;

template <typename T>
Halide::Runtime::Buffer<T> view(const T *data, std::initializer_list<std::pair<int64_t, int64_t>> extent_stride) {
    std::vector<halide_dimension_t> dims;
    for (auto [e, s] : extent_stride) dims.push_back(halide_dimension_t(0, (int32_t)e, (int32_t)s));
    return Halide::Runtime::Buffer<T>(const_cast<T *>(data), (int)dims.size(), dims.data());
}

// The few Halide error codes a kernel returns here (HalideRuntime.h).
std::string status_name(int status) {
    switch (status) {
    case -2: return " (explicit_bounds_too_small)";
    case -4: return " (access_out_of_bounds: the schedule reads outside an input buffer)";
    case -5: return " (buffer_allocation_too_large)";
    case -8: return " (constraint_violated)";
    case -11: return " (out_of_memory)";
    case -27: return " (requirement_failed)";
    default: return "";
    }
}

void check(const char *kernel, int status) {
    if (status != 0) throw std::runtime_error(std::string("kernel ") + kernel + " failed, Halide status " +
                                              std::to_string(status) + status_name(status));
}

// W (out, in) row-major -> W^T (in, out) row-major: the kernels' weight_t(o, k).
std::vector<float> transposed(const float *w, int64_t out, int64_t in) {
    std::vector<float> t((size_t)(out * in));
    for (int64_t o = 0; o < out; o++) {
        for (int64_t k = 0; k < in; k++) t[(size_t)(k * out + o)] = w[o * in + k];
    }
    return t;
}

void project(const KernelSet &ks, const float *x, int64_t rows, int64_t E, std::vector<float> &wt,
             std::vector<float> &b, float *y) {
    HBuf xb = view(x, {{E, 1}, {rows, E}});
    HBuf wb = view(wt.data(), {{E, 1}, {E, E}});
    HBuf bb = view(b.data(), {{E, 1}});
    HBuf yb = view(y, {{E, 1}, {rows, E}});
    check("linear", ks.linear(xb.raw_buffer(), wb.raw_buffer(), bb.raw_buffer(), yb.raw_buffer()));
}

// Absent masks: zero-stride views of one zero row, as the runtime passes them.
struct NoMasks {
    std::vector<float> zf;
    std::vector<uint8_t> zb;
    HBuf am, kpm;
    HBufU8 amb;
    NoMasks(int64_t S, int64_t L, int64_t H, int64_t N) : zf((size_t)S, 0.0f), zb((size_t)S, 0) {
        am = view(zf.data(), {{S, 1}, {L, 0}, {H, 0}, {N, 0}});
        amb = view(zb.data(), {{S, 1}, {L, 0}, {H, 0}, {N, 0}});
        kpm = view(zf.data(), {{S, 1}, {N, 0}});
    }
};

}  // namespace

const KernelSet *find_kernel_set(const std::string &name, const Shape &s) {
    auto lower = [](std::string x) {
        for (auto &c : x) c = (char)std::tolower((unsigned char)c);
        return x;
    };
    const std::string self = std::to_string(s.N) + "," + std::to_string(s.L) + "," + std::to_string(s.L) + "," +
                             std::to_string(s.E) + "," + std::to_string(s.H);
    const KernelSet *first = nullptr;
    for (const KernelSet &ks : kernel_sets()) {
        if (lower(ks.name) != lower(name)) continue;
        if (ks.estimate == nullptr || self == ks.estimate) return &ks;
        if (first == nullptr) first = &ks;
    }
    return first;
}

KernelMha::KernelMha(const KernelSet &ks, const MhaWeights &w, int64_t num_heads) : ks_(ks), E_(w.E), H_(num_heads) {
    wq_t_ = transposed(w.wq(), E_, E_);
    wk_t_ = transposed(w.wk(), E_, E_);
    wv_t_ = transposed(w.wv(), E_, E_);
    wo_t_ = transposed(w.out_proj_weight.data(), E_, E_);
    bq_.assign(w.bq(), w.bq() + E_);
    bk_.assign(w.bk(), w.bk() + E_);
    bv_.assign(w.bv(), w.bv() + E_);
    bo_ = w.out_proj_bias;
}

void KernelMha::forward(const Shape &s, const float *query, const float *kv, bool causal, float *out, float *weights) {
    const int64_t N = s.N, L = s.L, S = s.S, E = E_, H = H_, D = E / H;
    const bool nw = weights != nullptr;
    const int64_t chunk_w = std::min(L, hmha::kWeightsQueryChunk);
    // Passes of NB batches, as the runtime's Sequence path (batch_passes.h),
    // with our kernels. An autoscheduled set runs the whole shape in one pass:
    // its schedules were made for that shape (Li2018's sdpa read past a pass of
    // 4 of the 32 batches it was scheduled for).
    const int64_t NB =
        ks_.estimate ? N : std::min(N, hmha::auto_batch_chunk(L, S, E, hmha::kSequenceChunkBytesPerThread));
    auto a16 = [](int64_t n) { return (n + 15) & ~(int64_t)15; };
    const int64_t sizes[] = {a16(L * NB * E), a16(L * NB * E), a16(S * NB * E), a16(S * NB * E),
                             nw ? a16(NB * H * chunk_w * S) : 0};
    int64_t total = 0;
    for (int64_t n : sizes) total += n;
    if ((int64_t)ws_.size() < total) ws_.resize((size_t)total);
    float *qp = ws_.data(), *attn = qp + sizes[0], *kp = attn + sizes[1], *vp = kp + sizes[2], *ph = vp + sizes[3];
    NoMasks m(S, L, H, N);
    const float scale = (float)std::sqrt(1.0 / (double)D);

    for (int64_t n0 = 0; n0 < N; n0 += NB) {
        const int64_t nb = std::min(NB, N - n0);
        project(ks_, query + n0 * L * E, nb * L, E, wq_t_, bq_, qp);
        project(ks_, kv + n0 * S * E, nb * S, E, wk_t_, bk_, kp);
        project(ks_, kv + n0 * S * E, nb * S, E, wv_t_, bv_, vp);

        // Head views at the pass's batches (the masks are indexed by batch).
        HBuf qv = view(qp, {{D, 1}, {H, D}, {L, E}, {nb, L * E}});
        HBuf av = view(attn, {{D, 1}, {H, D}, {L, E}, {nb, L * E}});
        HBuf kvv = view(kp, {{D, 1}, {H, D}, {S, E}, {nb, S * E}});
        HBuf vv = view(vp, {{D, 1}, {H, D}, {S, E}, {nb, S * E}});
        if (n0 > 0) {
            for (HBuf *b : {&qv, &av, &kvv, &vv}) b->translate(3, (int)n0);
        }

        if (!nw) {
            const int64_t chunk = causal ? hmha::kCausalQueryChunk : L;
            for (int64_t i0 = 0; i0 < L; i0 += chunk) {
                const int64_t rows = std::min(chunk, L - i0);
                const int64_t keys = causal ? std::min(S, i0 + rows) : S;
                auto qc = qv.cropped(2, (int)i0, (int)rows), ac = av.cropped(2, (int)i0, (int)rows);
                auto kc = kvv.cropped(2, 0, (int)keys), vc = vv.cropped(2, 0, (int)keys);
                check("sdpa", ks_.sdpa_for(keys, rows, E)(qc.raw_buffer(), kc.raw_buffer(), vc.raw_buffer(),
                                                          m.am.raw_buffer(), m.amb.raw_buffer(), m.kpm.raw_buffer(),
                                                          (int)S, causal, false, scale, ac.raw_buffer()));
            }
        } else {
            HBuf per_head = view(ph, {{S, 1}, {chunk_w, S}, {H, chunk_w * S}, {nb, H * chunk_w * S}});
            if (n0 > 0) per_head.translate(3, (int)n0);
            HBuf mean_all = view(weights, {{S, 1}, {L, S}, {N, L * S}}).cropped(2, (int)n0, (int)nb);
            for (int64_t i0 = 0; i0 < L; i0 += chunk_w) {
                const int64_t rows = std::min(chunk_w, L - i0);
                auto qc = qv.cropped(2, (int)i0, (int)rows), ac = av.cropped(2, (int)i0, (int)rows);
                HBuf wv = per_head.cropped(1, 0, (int)rows);
                wv.translate(1, (int)i0);
                check("masked_softmax", ks_.masked_softmax(qc.raw_buffer(), kvv.raw_buffer(), m.am.raw_buffer(),
                                                           m.amb.raw_buffer(), m.kpm.raw_buffer(), (int)S, causal,
                                                           false, scale, wv.raw_buffer()));
                check("attend", ks_.attend(wv.raw_buffer(), vv.raw_buffer(), ac.raw_buffer()));
                HBuf mc = mean_all.cropped(1, (int)i0, (int)rows);
                check("head_mean", ks_.head_mean(wv.raw_buffer(), mc.raw_buffer()));
            }
        }
        project(ks_, attn, nb * L, E, wo_t_, bo_, out + n0 * L * E);
    }
}

KernelResult bench_kernel(const std::string &kernel, const KernelSet &ks, const KernelSet &ref, const Shape &s,
                          double min_seconds, int min_reps) {
    KernelResult r;
    const int64_t N = s.N, L = s.L, S = s.S, E = s.E, H = s.H, D = E / H;
    const int64_t C = std::min(L, hmha::kWeightsQueryChunk);
    const float scale = (float)std::sqrt(1.0 / (double)D);
    // (N, L|S, E) rows, as the projections leave them.
    std::vector<float> q = random_floats((size_t)(N * L * E), 1.0f, 31);
    std::vector<float> k = random_floats((size_t)(N * S * E), 1.0f, 32);
    std::vector<float> v = random_floats((size_t)(N * S * E), 1.0f, 33);
    HBuf qv = view(q.data(), {{D, 1}, {H, D}, {L, E}, {N, L * E}});
    HBuf kvv = view(k.data(), {{D, 1}, {H, D}, {S, E}, {N, S * E}});
    HBuf vv = view(v.data(), {{D, 1}, {H, D}, {S, E}, {N, S * E}});
    NoMasks m(S, L, H, N);

    std::function<int(const KernelSet &, float *)> call;
    size_t out_n = 0;
    std::vector<float> w_in, wt, bias;  // inputs of the kernels that need more
    if (kernel == "linear") {
        wt = random_floats((size_t)(E * E), 1.0f / std::sqrt((float)E), 34);
        bias = random_floats((size_t)E, 0.1f, 35);
        out_n = (size_t)(N * L * E);
        r.flops = 2.0 * N * L * E * E;
        call = [&](const KernelSet &set, float *out) {
            if (!set.linear) return -1;
            HBuf xb = view(q.data(), {{E, 1}, {N * L, E}});
            HBuf wb = view(wt.data(), {{E, 1}, {E, E}});
            HBuf bb = view(bias.data(), {{E, 1}});
            HBuf yb = view(out, {{E, 1}, {N * L, E}});
            return set.linear(xb.raw_buffer(), wb.raw_buffer(), bb.raw_buffer(), yb.raw_buffer());
        };
    } else if (kernel == "sdpa") {
        out_n = (size_t)(N * L * E);
        r.flops = 4.0 * N * L * S * E;
        call = [&](const KernelSet &set, float *out) {
            if (!set.sdpa) return -1;
            HBuf ob = view(out, {{D, 1}, {H, D}, {L, E}, {N, L * E}});
            // The class the runtime would call at S keys (ours: sdpa_short for short ones).
            return set.sdpa_for(S, L, E)(qv.raw_buffer(), kvv.raw_buffer(), vv.raw_buffer(), m.am.raw_buffer(),
                                         m.amb.raw_buffer(), m.kpm.raw_buffer(), (int)S, false, false, scale,
                                         ob.raw_buffer());
        };
    } else if (kernel == "masked_softmax") {
        out_n = (size_t)(N * H * C * S);
        r.flops = 2.0 * N * C * S * E;
        call = [&](const KernelSet &set, float *out) {
            if (!set.masked_softmax) return -1;
            HBuf qc = qv.cropped(2, 0, (int)C);
            HBuf wb = view(out, {{S, 1}, {C, S}, {H, C * S}, {N, H * C * S}});
            return set.masked_softmax(qc.raw_buffer(), kvv.raw_buffer(), m.am.raw_buffer(), m.amb.raw_buffer(),
                                      m.kpm.raw_buffer(), (int)S, false, false, scale, wb.raw_buffer());
        };
    } else if (kernel == "attend" || kernel == "head_mean") {
        // Softmax-like weights: positive, rows summing to 1.
        w_in = random_floats((size_t)(N * H * C * S), 1.0f, 36);
        for (auto &x : w_in) x = std::fabs(x) * 2.0f / (float)S;
        HBuf wb = view(w_in.data(), {{S, 1}, {C, S}, {H, C * S}, {N, H * C * S}});
        if (kernel == "attend") {
            out_n = (size_t)(N * C * E);
            r.flops = 2.0 * N * C * S * E;
            call = [&, wb](const KernelSet &set, float *out) mutable {
                if (!set.attend) return -1;
                HBuf ob = view(out, {{D, 1}, {H, D}, {C, E}, {N, C * E}});
                return set.attend(wb.raw_buffer(), vv.raw_buffer(), ob.raw_buffer());
            };
        } else {
            out_n = (size_t)(N * C * S);
            r.flops = 1.0 * N * H * C * S;
            call = [&, wb](const KernelSet &set, float *out) mutable {
                if (!set.head_mean) return -1;
                HBuf ob = view(out, {{S, 1}, {C, S}, {N, C * S}});
                return set.head_mean(wb.raw_buffer(), ob.raw_buffer());
            };
        }
    } else {
        r.error = "unknown kernel '" + kernel + "'";
        return r;
    }
    std::vector<float> got(out_n), want(out_n);
    int st = call(ks, got.data());
    if (st == -1) {
        r.error = std::string(ks.name) + " has no " + kernel + " kernel (its autoscheduler failed)";
        return r;
    }
    if (st != 0) {
        r.error = kernel + " failed, Halide status " + std::to_string(st) + status_name(st);
        return r;
    }
    if (call(ref, want.data()) != 0) {
        r.error = "reference kernel failed";
        return r;
    }
    r.rel_diff = diff(got.data(), want.data(), out_n).rel();
    if (!(r.rel_diff <= 1e-4)) {
        r.error = "output differs from " + std::string(ref.name) + "'s: max rel diff " + std::to_string(r.rel_diff);
        return r;
    }
    float *o = got.data();
    r.timing = time_runs([&] { call(ks, o); }, 1, min_reps, std::max(200, min_reps), min_seconds);
    r.ok = true;
    return r;
}

}  // namespace hmha_bench
