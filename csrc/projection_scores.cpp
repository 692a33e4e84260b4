// projection_scores_cpu: see projection_scores.h for the contract.
#include "projection_scores.h"

#include <algorithm>

namespace masc_fast {

template <typename T>
void projection_scores_cpu(const T* proj, int64_t n, int64_t R, const int64_t* offsets, int64_t k,
                           const T* sq_norms, T* scores, int64_t* pred) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* row = proj + i * R;
    T* out = scores + i * k;
    const double sq_norm = static_cast<double>(sq_norms[i]);
    int64_t best = -1;
    T best_score = T(0);
    for (int64_t c = 0; c < k; ++c) {
      const int64_t begin = offsets[c];
      const int64_t end = offsets[c + 1];
      // Double accumulation: float32 sums over a few hundred columns would lose ~1e-5.
      double energy = 0.0;
      for (int64_t j = begin; j < end; ++j) {
        const double v = static_cast<double>(row[j]);
        energy += v * v;
      }
      const T score = sq_norm > 0.0 ? static_cast<T>(std::min(energy / sq_norm, 1.0)) : T(0);
      out[c] = score;
      // Compare the stored (rounded) value so pred is the argmax of the returned scores.
      if (end > begin && (best < 0 || score > best_score)) {
        best = c;
        best_score = score;
      }
    }
    pred[i] = best;
  }
}

template void projection_scores_cpu<float>(const float*, int64_t, int64_t, const int64_t*, int64_t,
                                           const float*, float*, int64_t*);
template void projection_scores_cpu<double>(const double*, int64_t, int64_t, const int64_t*,
                                            int64_t, const double*, double*, int64_t*);

}  // namespace masc_fast
