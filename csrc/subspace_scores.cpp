// subspace_scores_cpu: see subspace_scores.h for the contract.
#include "subspace_scores.h"

#include <algorithm>
#include <vector>

#include "blas.h"
#include "parallel.h"
#include "simd.h"

namespace masc_fast {

namespace {

// Sum of squares in double; `omp simd` lets the compiler reassociate (vectorise) the sum.
template <typename T>
MASC_INLINE double sum_of_squares(const T* values, int64_t count) {
  double total = 0.0;
#pragma omp simd reduction(+ : total)
  for (int64_t j = 0; j < count; ++j) {
    const double v = static_cast<double>(values[j]);
    total += v * v;
  }
  return total;
}

// Scores and predictions of a block's rows from their projections, column-major (tile column
// j holds the block's rows' products with basis column j, ld rows). Energies are summed per
// class across the rows at once (energy: k x rows doubles, class-major), so the inner loop runs
// along contiguous rows at full vector width whatever the segment lengths; then each row takes
// its ratio, clamp and argmax.
template <typename T>
MASC_INLINE void score_block(const T* x_block, const T* tile, int64_t rows, int64_t d,
                             const int64_t* offsets, const uint8_t* complement, int64_t k,
                             double* energy, T* scores, int64_t* pred) {
  for (int64_t c = 0; c < k; ++c) {
    double* sums = energy + c * rows;
    for (int64_t i = 0; i < rows; ++i) sums[i] = 0.0;
    for (int64_t j = offsets[c]; j < offsets[c + 1]; ++j) {
      const T* column = tile + j * rows;
#pragma omp simd
      for (int64_t i = 0; i < rows; ++i) {
        const double v = static_cast<double>(column[i]);
        sums[i] += v * v;
      }
    }
  }
  for (int64_t i = 0; i < rows; ++i) {
    const double sq_norm = sum_of_squares(x_block + i * d, d);
    int64_t best = -1;
    T best_score = T(0);
    for (int64_t c = 0; c < k; ++c) {
      const double value = energy[c * rows + i];
      const double ratio = complement[c] ? 1.0 - value / sq_norm : value / sq_norm;
      const T score = sq_norm > 0.0 ? static_cast<T>(std::min(std::max(ratio, 0.0), 1.0)) : T(0);
      scores[i * k + c] = score;
      if ((offsets[c + 1] > offsets[c] || complement[c]) && (best < 0 || score > best_score)) {
        best = c;
        best_score = score;
      }
    }
    pred[i] = best;
  }
}

// The epilogue at the CPU's vector width (simd.h): one clone set per dtype.
MASC_SIMD_CLONES void score_block_wide(const float* x_block, const float* tile, int64_t rows,
                                       int64_t d, const int64_t* offsets,
                                       const uint8_t* complement, int64_t k, double* energy,
                                       float* scores, int64_t* pred) {
  score_block(x_block, tile, rows, d, offsets, complement, k, energy, scores, pred);
}

MASC_SIMD_CLONES void score_block_wide(const double* x_block, const double* tile, int64_t rows,
                                       int64_t d, const int64_t* offsets,
                                       const uint8_t* complement, int64_t k, double* energy,
                                       double* scores, int64_t* pred) {
  score_block(x_block, tile, rows, d, offsets, complement, k, energy, scores, pred);
}

}  // namespace

template <typename T>
void subspace_scores_cpu(const T* x, int64_t n, int64_t d, const T* basis, int64_t R,
                         const int64_t* offsets, const uint8_t* complement, int64_t k,
                         int64_t block_rows, int threads, T* scores, int64_t* pred) {
  if (n == 0) return;
  const int workers = worker_count(threads);
  const int64_t blocks = (n + block_rows - 1) / block_rows;
  const size_t tile_size = static_cast<size_t>(block_rows) * std::max<int64_t>(R, 1);
  const size_t energy_size = static_cast<size_t>(block_rows) * std::max<int64_t>(k, 1);
  std::vector<T> tiles(static_cast<size_t>(workers) * tile_size);
  std::vector<double> energies(static_cast<size_t>(workers) * energy_size);

#pragma omp parallel for num_threads(workers) schedule(dynamic, 1)
  for (int64_t block = 0; block < blocks; ++block) {
    const int64_t first = block * block_rows;
    const int64_t rows = std::min(block_rows, n - first);
    const T* x_block = x + first * d;
    const size_t w = static_cast<size_t>(worker_index());
    T* tile = tiles.data() + w * tile_size;
    if (R > 0) {
      // Column-major P (rows x R, ld rows) = X_blk . U: X_blk row-major is column-major
      // X_blk^T (d x rows, ld d), U row-major is column-major U^T (R x d, ld R); both transposed.
      gemm<T>('T', 'T', static_cast<int>(rows), static_cast<int>(R), static_cast<int>(d), T(1),
              x_block, static_cast<int>(d), basis, static_cast<int>(R), T(0), tile,
              static_cast<int>(rows));
    }
    score_block_wide(x_block, tile, rows, d, offsets, complement, k,
                     energies.data() + w * energy_size, scores + first * k, pred + first);
  }
}

template void subspace_scores_cpu<float>(const float*, int64_t, int64_t, const float*, int64_t,
                                         const int64_t*, const uint8_t*, int64_t, int64_t, int,
                                         float*, int64_t*);
template void subspace_scores_cpu<double>(const double*, int64_t, int64_t, const double*, int64_t,
                                          const int64_t*, const uint8_t*, int64_t, int64_t, int,
                                          double*, int64_t*);

}  // namespace masc_fast
