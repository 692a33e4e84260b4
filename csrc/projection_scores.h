// projection_scores_cpu: MASC scores and predictions from a precomputed projection.
//
// Contract
// --------
// Inputs (all row-major, c-contiguous, checked by bindings.cpp):
//   proj      n x R   the product X . U of n rows x_i (d-vectors) with the concatenated class
//                     bases U = [U_1 .. U_k] (d x R); class c owns columns
//                     offsets[c] .. offsets[c+1]-1.
//   offsets   k + 1   int64, non-decreasing, offsets[0] = 0, offsets[k] = R.
//   sq_norms  n       ||x_i||^2, in the same dtype T as proj.
// Outputs:
//   scores    n x k   row-major, dtype T.
//   pred      n       int64.
//
// For each row i and class c:
//   energy      = sum_{j = offsets[c]}^{offsets[c+1]-1} proj[i, j]^2   (accumulated in double)
//   scores[i,c] = min(energy / sq_norms[i], 1)   if sq_norms[i] > 0
//               = 0                              otherwise (a zero vector scores 0 for every
//                                                class; never NaN)
// The clamp at 1 absorbs rounding: for orthonormal U_c the exact energy never exceeds ||x_i||^2.
// A class with an empty segment (offsets[c] == offsets[c+1]) is absent: its score is 0 and it
// is never predicted.
//   pred[i] = the present class with the largest scores[i, c] (compared as stored, in T), ties
//             going to the lowest class index (strict '>' while scanning c upwards);
//             -1 when no class is present.
//
// Work split: one OpenMP thread handles whole rows (static schedule); each row reads R values
// and writes k, so the op is memory-bound and needs no tiling. Without OpenMP it runs serially.
// Limits: none beyond int64 indexing; the caller bounds n x R (masc_fast.backends.cpp_ops
// processes X in row blocks so proj never holds all n rows).
#pragma once

#include <cstdint>

namespace masc_fast {

template <typename T>
void projection_scores_cpu(const T* proj, int64_t n, int64_t R, const int64_t* offsets, int64_t k,
                           const T* sq_norms, T* scores, int64_t* pred);

extern template void projection_scores_cpu<float>(const float*, int64_t, int64_t, const int64_t*,
                                                  int64_t, const float*, float*, int64_t*);
extern template void projection_scores_cpu<double>(const double*, int64_t, int64_t,
                                                   const int64_t*, int64_t, const double*,
                                                   double*, int64_t*);

}  // namespace masc_fast
