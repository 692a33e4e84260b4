// subspace_scores_cpu: see subspace_scores.h for the contract.
#include "subspace_scores.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
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

// Whether a row whose squared norm (double) is `sq_norm` must be scored again by rescore_row:
// outside [low, high] its products in T may have overflowed (float rows near 3.4e38) or lost
// their digits (subnormal products), or the norm itself left double's range. A norm of 0 is
// flagged too; rescore_row leaves a zero row as it is.
template <typename T>
struct ScoreRange;
template <>
struct ScoreRange<float> {
  static constexpr double low = 0x1p-200, high = 0x1p200;  // norms 2^-100 .. 2^100
};
template <>
struct ScoreRange<double> {
  static constexpr double low = 0x1p-1000, high = 0x1p1000;  // norms 2^-500 .. 2^500
};

template <typename T>
MASC_INLINE bool needs_rescore(double sq_norm) {
  // One unsigned compare of the bits (their order is the order of non-negative doubles): out
  // of range on either side, 0, NaN and a negative value all land above the span. Two
  // floating-point compares in the epilogue's row loop cost 64-wide layers ~10 % (A/B, one
  // thread, bench/RESULTS.md); this is within the noise.
  uint64_t bits, low, high;
  const double low_value = ScoreRange<T>::low, high_value = ScoreRange<T>::high;
  std::memcpy(&bits, &sq_norm, sizeof bits);
  std::memcpy(&low, &low_value, sizeof low);
  std::memcpy(&high, &high_value, sizeof high);
  return bits - low > high - low;
}

// A float row's norm is 0 only for a zero row (a subnormal's square is a normal double), which
// scores 0 as it is; a double row's 0 may be an underflow.
template <typename T>
MASC_INLINE bool zero_needs_rescore() {
  return sizeof(T) == 8;
}

// Scores and predictions of a block's rows from their projections, column-major (tile column
// j holds the block's rows' products with basis column j, ld rows). Energies are summed per
// class across the rows at once (energy: k x rows doubles, class-major), so the inner loop runs
// along contiguous rows at full vector width whatever the segment lengths; then each row takes
// its ratio, clamp and argmax.
// Returns whether any row must be scored again (needs_rescore, less float zero rows): counts
// in registers, not a per-row store, and blocks with zero rows (common after ReLU) are not
// read twice.
template <typename T>
MASC_INLINE bool score_block(const T* x_block, const T* tile, int64_t rows, int64_t d,
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
  int64_t flagged = 0, zeros = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const double sq_norm = sum_of_squares(x_block + i * d, d);
    flagged += needs_rescore<T>(sq_norm);
    zeros += sq_norm == 0.0;
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
  return flagged > (zero_needs_rescore<T>() ? 0 : zeros);
}

// The epilogue at the CPU's vector width (simd.h): one clone set per dtype.
MASC_SIMD_CLONES bool score_block_wide(const float* x_block, const float* tile, int64_t rows,
                                       int64_t d, const int64_t* offsets,
                                       const uint8_t* complement, int64_t k, double* energy,
                                       float* scores, int64_t* pred) {
  return score_block(x_block, tile, rows, d, offsets, complement, k, energy, scores, pred);
}

MASC_SIMD_CLONES bool score_block_wide(const double* x_block, const double* tile, int64_t rows,
                                       int64_t d, const int64_t* offsets,
                                       const uint8_t* complement, int64_t k, double* energy,
                                       double* scores, int64_t* pred) {
  return score_block(x_block, tile, rows, d, offsets, complement, k, energy, scores, pred);
}

// Score row `row` again from a copy scaled by 2^-e (e: its largest entry's binary exponent,
// capped so that 2^-e is a normal T): MASC's scores do not change with a row's scale, and the
// copy's products and norm are in range. Only for rows that needs_rescore (far outside
// 1e-30 .. 1e30 in float), so its one-row GEMM costs nothing in the usual case. Scratch:
// `scaled` (d), `projection` (R), `energy` (k), the worker's own.
template <typename T>
void rescore_row(const T* row, int64_t d, const T* basis, int64_t R, const int64_t* offsets,
                 const uint8_t* complement, int64_t k, T* scaled, T* projection, double* energy,
                 T* scores, int64_t* pred) {
  T peak = T(0);
  for (int64_t j = 0; j < d; ++j) peak = std::max(peak, std::abs(row[j]));
  if (!(peak > T(0))) return;  // a zero row: score_block's scores (0) stand
  constexpr int cap = 1 - std::numeric_limits<T>::min_exponent;
  const int exponent = std::min(std::max(std::ilogb(peak), -cap), cap);
  const T down = std::ldexp(T(1), -exponent);
  for (int64_t j = 0; j < d; ++j) scaled[j] = row[j] * down;
  if (R > 0) {
    gemm<T>('T', 'T', 1, static_cast<int>(R), static_cast<int>(d), T(1), scaled,
            static_cast<int>(d), basis, static_cast<int>(R), T(0), projection, 1);
  }
  score_block(scaled, projection, 1, d, offsets, complement, k, energy, scores, pred);
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
  const size_t rescale_size = static_cast<size_t>(d + std::max<int64_t>(R, 1));
  std::vector<T> rescaled(static_cast<size_t>(workers) * rescale_size);

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
    const bool rescore =
        score_block_wide(x_block, tile, rows, d, offsets, complement, k,
                         energies.data() + w * energy_size, scores + first * k, pred + first);
    for (int64_t i = 0; rescore && i < rows; ++i) {
      const double sq_norm = sum_of_squares(x_block + i * d, d);
      if (needs_rescore<T>(sq_norm) && (sq_norm != 0.0 || zero_needs_rescore<T>())) {
        T* scaled = rescaled.data() + w * rescale_size;
        rescore_row(x_block + i * d, d, basis, R, offsets, complement, k, scaled, scaled + d,
                    energies.data() + w * energy_size, scores + (first + i) * k,
                    pred + first + i);
      }
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
