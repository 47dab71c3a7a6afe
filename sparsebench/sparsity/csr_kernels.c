/* CPU kernels of the always-sparse layers: CSR x dense (SpMM), the sampled dense-dense
 * product (SDDMM), and the linear layer's fused backward. Loaded by native.py, which compiles
 * this file on first use (-O3 -march=native) and calls it through ctypes.
 *
 * Conventions: a sparse matrix A (rows x n_in) is given in CSR by crow (rows + 1 entries),
 * col and val (one entry per active connection, ascending columns within a row, int64 and
 * float32). Dense operands are row-major with a row stride (ld*) and unit column stride; their
 * rows have ncols entries (the batch dimension R of a layer). Every function handles the rows
 * [row0, row1) of A, so callers can split a product over threads by rows; the fused backward
 * writes rows of dXt at random and is split by columns instead (see native.py).
 *
 * Why by hand: MKL's CSR x dense (what torch.mm calls on CPU) runs at 5-6 GFLOP/s on this
 * repository's AMD CPU and torch's sampled_addmm at 8; these loops, which keep a whole output
 * row of up to CB columns in registers and prefetch the dense rows PF entries ahead, run about
 * 2x faster (benchmarks/sparse_layer.py measures both). */
#include <stdint.h>
#include <string.h>

#define CB 128 /* output columns accumulated at once (R = 128 fits in one pass) */
#define PF 8   /* entries ahead whose dense row is prefetched */

static inline void prefetch_row(const float *row, int64_t n) {
    for (int64_t k = 0; k < n; k += 16) __builtin_prefetch(row + k);
}

/* Eight floats as one value (GCC/Clang vector extension: AVX with -march=native on x86, two
 * halves elsewhere); aligned(4) lets it load from and store to any float address. A dot
 * product over a row keeps four of them, so four FMA chains run at once instead of one. */
typedef float v8 __attribute__((vector_size(32), aligned(4)));

static inline float hsum(v8 v) {
    float s = 0.0f;
    for (int k = 0; k < 8; ++k) s += v[k];
    return s;
}

/* sum_k a[k] b[k] over n entries (four vector accumulators, then the remainder). */
static inline float dot(const float *a, const float *b, int64_t n) {
    v8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        s0 += *(const v8 *)(a + k) * *(const v8 *)(b + k);
        s1 += *(const v8 *)(a + k + 8) * *(const v8 *)(b + k + 8);
        s2 += *(const v8 *)(a + k + 16) * *(const v8 *)(b + k + 16);
        s3 += *(const v8 *)(a + k + 24) * *(const v8 *)(b + k + 24);
    }
    float s = hsum((s0 + s1) + (s2 + s3));
    for (; k < n; ++k) s += a[k] * b[k];
    return s;
}

/* Y[i, :] = beta * Y[i, :] + bias[i] + sum_p val[p] X[col[p], :]  (beta 0 or 1; bias may be
 * NULL). */
void sb_spmm(int64_t row0, int64_t row1, const int64_t *crow, const int64_t *col,
             const float *val, const float *X, int64_t ldx, float *Y, int64_t ldy,
             int64_t ncols, const float *bias, int64_t beta) {
    for (int64_t c0 = 0; c0 < ncols; c0 += CB) {
        const int64_t cb = ncols - c0 < CB ? ncols - c0 : CB;
        for (int64_t i = row0; i < row1; ++i) {
            float acc[CB];
            float *y = Y + i * ldy + c0;
            const float b = bias ? bias[i] : 0.0f;
            if (beta) {
                for (int64_t k = 0; k < cb; ++k) acc[k] = y[k] + b;
            } else {
                for (int64_t k = 0; k < CB; ++k) acc[k] = b;
            }
            const int64_t end = crow[i + 1];
            for (int64_t p = crow[i]; p < end; ++p) {
                if (p + PF < end) prefetch_row(X + col[p + PF] * ldx + c0, cb);
                const float *x = X + col[p] * ldx + c0;
                const float w = val[p];
                if (cb == CB) {
                    for (int64_t k = 0; k < CB; ++k) acc[k] += w * x[k];
                } else {
                    for (int64_t k = 0; k < cb; ++k) acc[k] += w * x[k];
                }
            }
            memcpy(y, acc, (size_t)cb * sizeof(float));
        }
    }
}

/* out[p] = sum_k A[i, k] Bt[col[p], k] for every entry p of row i: (A B) at the CSR positions. */
void sb_sddmm(int64_t row0, int64_t row1, const int64_t *crow, const int64_t *col,
              const float *A, int64_t lda, const float *Bt, int64_t ldb, int64_t ncols,
              float *out) {
    for (int64_t i = row0; i < row1; ++i) {
        const float *a = A + i * lda;
        const int64_t end = crow[i + 1];
        for (int64_t p = crow[i]; p < end; ++p) {
            if (p + PF < end) prefetch_row(Bt + col[p + PF] * ldb, ncols);
            out[p] = dot(a, Bt + col[p] * ldb, ncols);
        }
    }
}

/* The linear layer's backward in one pass over the active connections: for every entry p of
 * row i (output i, input j = col[p]),
 *     dW[p]     = sum_k G[i, k] Xt[j, k]        (weight gradient at the active position)
 *     dXt[j, :] += val[p] G[i, :]               (input gradient, scattered: no CSR of W^T)
 * G = dY^T (rows x ncols), Xt = X^T (n_in x ncols); dXt must hold zeros (or a sum to add to). */
void sb_linear_backward(int64_t row0, int64_t row1, const int64_t *crow, const int64_t *col,
                        const float *val, const float *G, int64_t ldg, const float *Xt,
                        int64_t ldx, float *dXt, int64_t lddx, int64_t ncols, float *dW) {
    for (int64_t i = row0; i < row1; ++i) {
        const float *g = G + i * ldg;
        const int64_t end = crow[i + 1];
        for (int64_t p = crow[i]; p < end; ++p) {
            if (p + PF < end) {
                prefetch_row(Xt + col[p + PF] * ldx, ncols);
                prefetch_row(dXt + col[p + PF] * lddx, ncols);
            }
            const float *x = Xt + col[p] * ldx;
            float *dx = dXt + col[p] * lddx;
            const float v = val[p];
            const v8 vv = (v8){0} + v;
            v8 s0 = {0}, s1 = {0};
            int64_t k = 0;
            for (; k + 16 <= ncols; k += 16) {
                const v8 g0 = *(const v8 *)(g + k), g1 = *(const v8 *)(g + k + 8);
                s0 += g0 * *(const v8 *)(x + k);
                s1 += g1 * *(const v8 *)(x + k + 8);
                *(v8 *)(dx + k) += vv * g0;
                *(v8 *)(dx + k + 8) += vv * g1;
            }
            float s = hsum(s0 + s1);
            for (; k < ncols; ++k) {
                s += g[k] * x[k];
                dx[k] += v * g[k];
            }
            dW[p] = s;
        }
    }
}
