// subspace_scores_cpu: fused MASC scoring; the n x R projection is never stored.
//
// Contract
// --------
// Inputs (row-major, c-contiguous, checked by bindings.cpp):
//   x        n x d   rows to score, dtype T (float or double).
//   basis    d x R   the concatenated class bases U = [U_1 .. U_k]; class c owns columns
//                    offsets[c] .. offsets[c+1]-1.
//   offsets  k + 1   int64, non-decreasing, offsets[0] = 0, offsets[k] = R.
//   complement k     uint8, 0 or 1: 1 when class c's columns hold the complement W_c of its
//                    subspace (the d - r_c trailing eigenvectors), scored as 1 - ||W_c^T x||^2
//                    / ||x||^2 (cheaper when r_c > d/2).
// Outputs:
//   scores   n x k   dtype T.   pred   n   int64.
//
// For each row i and class c:
//   energy      = sum_{j in class c} (x_i . U[:, j])^2            (summed in double)
//   ratio       = energy / ||x_i||^2, or 1 - energy / ||x_i||^2 where complement[c]
//   scores[i,c] = min(max(ratio, 0), 1) if ||x_i||^2 > 0 (||x_i||^2 summed in double)
//               = 0                     otherwise (a zero row scores 0; never NaN)
// The clamp absorbs rounding: for orthonormal U_c the exact energy never exceeds ||x_i||^2.
// Scale: a row whose ||x_i||^2 (double) lies outside [2^-200, 2^200] for float (2^+-1000 for
// double), or is not finite, is scored again from a copy scaled by a power of two (its largest
// entry to [1, 2)): its products in T could have overflowed or gone subnormal, and MASC's
// scores do not change with a row's scale. A double row whose norm underflowed to 0 is scored
// that way too; a zero row keeps its 0. Blocks with no such row pay one integer compare a row.
// A class with an empty segment and no complement flag is absent: score 0, never predicted
// (an empty segment with the flag is the whole space: every nonzero row scores 1).
//   pred[i] = the present class with the largest scores[i, c] compared as stored in T, ties to
//             the lowest index (strict '>' scanning c upwards); -1 when no class is present.
//
// Work split: rows are cut into blocks of `block_rows`; OpenMP threads take blocks dynamically.
// A thread computes its block's projection P = X_blk . U with one single-threaded BLAS GEMM into
// its own tile (block_rows x R, dtype T, column-major), then, while the tile is still in cache,
// each class's energies summed along the block's rows (contiguous, full vector width; the
// epilogue is compiled per vector width, simd.h), and the ratio and argmax of each row. The
// products are in T (float32 GEMM for float32 rows); energies and norms accumulate in double.
// Memory: threads x (block_rows x (R x sizeof(T) + k x 8) + (d + R) x sizeof(T)) of tiles,
// energies and one rescaled row with its projections, allocated before
// the parallel region (std::bad_alloc surfaces as MemoryError, never inside a thread).
// Never n x R.
// Limits: d, R and block_rows below 2^31 (LP64 BLAS); the BLAS table must be loaded.
#pragma once

#include <cstdint>

namespace masc_fast {

template <typename T>
void subspace_scores_cpu(const T* x, int64_t n, int64_t d, const T* basis, int64_t R,
                         const int64_t* offsets, const uint8_t* complement, int64_t k,
                         int64_t block_rows, int threads, T* scores, int64_t* pred);

extern template void subspace_scores_cpu<float>(const float*, int64_t, int64_t, const float*,
                                                int64_t, const int64_t*, const uint8_t*, int64_t,
                                                int64_t, int, float*, int64_t*);
extern template void subspace_scores_cpu<double>(const double*, int64_t, int64_t, const double*,
                                                 int64_t, const int64_t*, const uint8_t*, int64_t,
                                                 int64_t, int, double*, int64_t*);

}  // namespace masc_fast
