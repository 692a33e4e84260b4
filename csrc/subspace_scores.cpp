// subspace_scores_cpu: see subspace_scores.h for the contract.
#include "subspace_scores.h"

#include <algorithm>
#include <vector>

#include "blas.h"
#include "parallel.h"

namespace masc_fast {

namespace {

// Sum of squares in double; `omp simd` lets the compiler reassociate (vectorise) the sum.
template <typename T>
double sum_of_squares(const T* values, int64_t count) {
  double total = 0.0;
#pragma omp simd reduction(+ : total)
  for (int64_t j = 0; j < count; ++j) {
    const double v = static_cast<double>(values[j]);
    total += v * v;
  }
  return total;
}

// Scores and prediction of one row from its projection (R values) and ||x||^2.
template <typename T>
void score_row(const T* proj, double sq_norm, const int64_t* offsets, const uint8_t* complement,
               int64_t k, T* scores, int64_t* pred) {
  int64_t best = -1;
  T best_score = T(0);
  for (int64_t c = 0; c < k; ++c) {
    const int64_t begin = offsets[c];
    const int64_t end = offsets[c + 1];
    const double energy = sum_of_squares(proj + begin, end - begin);
    const double ratio = complement[c] ? 1.0 - energy / sq_norm : energy / sq_norm;
    const T score = sq_norm > 0.0 ? static_cast<T>(std::min(std::max(ratio, 0.0), 1.0)) : T(0);
    scores[c] = score;
    if ((end > begin || complement[c]) && (best < 0 || score > best_score)) {
      best = c;
      best_score = score;
    }
  }
  *pred = best;
}

}  // namespace

template <typename T>
void subspace_scores_cpu(const T* x, int64_t n, int64_t d, const T* basis, int64_t R,
                         const int64_t* offsets, const uint8_t* complement, int64_t k,
                         int64_t block_rows, int threads, T* scores, int64_t* pred) {
  if (n == 0) return;
  const int workers = worker_count(threads);
  const int64_t blocks = (n + block_rows - 1) / block_rows;
  std::vector<T> tiles(static_cast<size_t>(workers) * block_rows * std::max<int64_t>(R, 1));

#pragma omp parallel for num_threads(workers) schedule(dynamic, 1)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t first = block * block_rows;
    const int64_t rows = std::min(block_rows, n - first);
    const T* x_block = x + first * d;
    T* tile = tiles.data() + static_cast<size_t>(worker_index()) * block_rows * std::max<int64_t>(R, 1);
    if (R > 0) {
      // Row-major P (rows x R) = X_blk (rows x d) . U (d x R) is, column-major,
      // P^T (R x rows) = U^T (R x d, ld R) . X_blk^T (d x rows, ld d).
      gemm<T>('N', 'N', static_cast<int>(R), static_cast<int>(rows), static_cast<int>(d), T(1),
              basis, static_cast<int>(R), x_block, static_cast<int>(d), T(0), tile,
              static_cast<int>(R));
    }
    for (int64_t i = 0; i < rows; ++i) {
      const double sq_norm = sum_of_squares(x_block + i * d, d);
      score_row(tile + i * R, sq_norm, offsets, complement, k, scores + (first + i) * k,
                pred + first + i);
    }
  }
}

template void subspace_scores_cpu<float>(const float*, int64_t, int64_t, const float*, int64_t,
                                         const int64_t*, const uint8_t*, int64_t, int64_t, int,
                                         float*, int64_t*);
template void subspace_scores_cpu<double>(const double*, int64_t, int64_t, const double*, int64_t,
                                          const int64_t*, const uint8_t*, int64_t, int64_t, int,
                                          double*, int64_t*);

}  // namespace masc_fast
