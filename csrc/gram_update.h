// gram_update_cpu: class-bucketed Gram accumulation, gram[c] += X_c^T X_c for every class c.
//
// Contract
// --------
// Inputs (row-major, c-contiguous, checked by bindings.cpp):
//   gram     k x d x d   dtype TG (float or double), updated in place; both triangles are
//                        written, so it stays exactly symmetric.
//   x        n x d       dtype TX; TX = TG, or float rows into a double Gram.
//   labels   n           int64 in [0, k) (bindings.cpp checks every label before the call).
//
// Method: one counting sort of the row indices by class (O(n)). Work is cut into tasks
// (class c, column block [j0, j1) of width <= block_cols); a task owns the upper-triangle
// entries (i, j) with j in [j0, j1), i <= j, and their mirrors (j, i), so tasks write disjoint
// entries and need no locks. OpenMP threads take tasks dynamically, heaviest column blocks first.
// A task walks its class's rows in buckets of <= bucket_rows: it gathers their first j1 columns
// into its thread's buffer, then one single-threaded BLAS GEMM gives the block above the
// diagonal (rows 0..j0) and one SYRK the diagonal block's upper triangle, into a scratch panel
// in TX; the panel is then added into the Gram (and its mirror) in TG. With panel_cols below
// the block's width (0: the width), the block is done instead as GEMM sub-panels of
// panel_cols columns, each from row 0 through its own diagonal block (on small Grams faster
// than one SYRK, and 3/8 fewer products than one square GEMM at 4 sub-panels).
// Precision: products are summed in TX over at most bucket_rows rows, then added in TG (float32
// rows: a float32 product per bucket, summed across buckets in the double Gram), the same policy
// as the torch backend's per-class GEMM over a staged flush.
// Memory: per thread bucket_rows x d + d x block_cols elements of TX, allocated before the
// parallel region (std::bad_alloc surfaces as MemoryError). No n x d copy of x.
// Returns: the largest |x| entry it read (every entry of every row of a class it updates), or
// NaN when it met a NaN or Inf; such a bucket is left out of the Gram, and the caller reports
// the rows (masc_fast checks them again to name the batch and row, and restores its Grams).
// Limits: d, bucket_rows and block_cols below 2^31 (LP64 BLAS).
#pragma once

#include <cstdint>

namespace masc_fast {

template <typename TX, typename TG>
double gram_update_cpu(TG* gram, int64_t k, int64_t d, const TX* x, int64_t n,
                       const int64_t* labels, int64_t bucket_rows, int64_t block_cols,
                       int64_t panel_cols, int threads);

extern template double gram_update_cpu<float, float>(
    float*, int64_t, int64_t, const float*, int64_t, const int64_t*,
    int64_t, int64_t, int64_t, int);
extern template double gram_update_cpu<float, double>(
    double*, int64_t, int64_t, const float*, int64_t, const int64_t*,
    int64_t, int64_t, int64_t, int);
extern template double gram_update_cpu<double, double>(
    double*, int64_t, int64_t, const double*, int64_t, const int64_t*,
    int64_t, int64_t, int64_t, int);

}  // namespace masc_fast
