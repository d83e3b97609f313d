#include "blas_mha.h"

#include <cblas.h>

#include <cmath>
#include <limits>

namespace hmha_bench {

namespace {

// y (rows, E) = x (rows, in) W^T + b, W (E, in) row-major as in PyTorch.
void linear(const float *x, int64_t rows, int64_t in, const float *W, const float *b, int64_t E, float *y) {
    for (int64_t r = 0; r < rows; r++) std::copy(b, b + E, y + r * E);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)E, (int)in, 1.0f, x, (int)in, W, (int)in,
                1.0f, y, (int)E);
}

}  // namespace

void BlasMha::forward(const Shape &s, const float *query, const float *kv, bool causal, float *out, float *weights) {
    const int64_t N = s.N, L = s.L, S = s.S, E = s.E, H = H_, D = E / H_;
    q_.resize((size_t)(N * L * E));
    attn_.resize((size_t)(N * L * E));
    k_.resize((size_t)(N * S * E));
    v_.resize((size_t)(N * S * E));
    scores_.resize((size_t)(L * S));
    linear(query, N * L, E, w_.wq(), w_.bq(), E, q_.data());
    linear(kv, N * S, E, w_.wk(), w_.bk(), E, k_.data());
    linear(kv, N * S, E, w_.wv(), w_.bv(), E, v_.data());

    const float scale = 1.0f / std::sqrt((float)D);
    const float inv_heads = 1.0f / (float)H;
    float *P = scores_.data();
    for (int64_t n = 0; n < N; n++) {
        for (int64_t h = 0; h < H; h++) {
            const float *Q = q_.data() + n * L * E + h * D;
            const float *K = k_.data() + n * S * E + h * D;
            const float *V = v_.data() + n * S * E + h * D;
            float *A = attn_.data() + n * L * E + h * D;
            // P = scale * Q K^T  (L x S)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)L, (int)S, (int)D, scale, Q, (int)E, K, (int)E,
                        0.0f, P, (int)S);
            // Row softmax, causal keys j > i hidden.
#ifdef HMHA_BENCH_OPENMP
#pragma omp parallel for schedule(static)
#endif
            for (int64_t i = 0; i < L; i++) {
                float *row = P + i * S;
                const int64_t visible = causal ? std::min(S, i + 1) : S;
                float m = -std::numeric_limits<float>::infinity();
                for (int64_t j = 0; j < visible; j++) m = std::max(m, row[j]);
                float sum = 0.0f;
                for (int64_t j = 0; j < visible; j++) {
                    row[j] = std::exp(row[j] - m);
                    sum += row[j];
                }
                const float inv = 1.0f / sum;
                for (int64_t j = 0; j < visible; j++) row[j] *= inv;
                for (int64_t j = visible; j < S; j++) row[j] = 0.0f;
                if (weights) {
                    float *w = weights + (n * L + i) * S;
                    if (h == 0) {
                        for (int64_t j = 0; j < S; j++) w[j] = row[j] * inv_heads;
                    } else {
                        for (int64_t j = 0; j < S; j++) w[j] += row[j] * inv_heads;
                    }
                }
            }
            // A_h = P V_h  (L x D, strided into the (N, L, E) attention rows)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)L, (int)D, (int)S, 1.0f, P, (int)S, V, (int)E,
                        0.0f, A, (int)E);
        }
    }
    linear(attn_.data(), N * L, E, w_.out_proj_weight.data(), w_.out_proj_bias.data(), E, out);
}

}  // namespace hmha_bench
