// gram_update_cpu: see gram_update.h for the contract.
#include "gram_update.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "blas.h"
#include "parallel.h"

namespace masc_fast {

namespace {

struct Task {
  int64_t label;
  int64_t first_col;  // j0
  int64_t end_col;    // j1
};

// Rows of each class, in input order, after one counting sort.
struct ClassRows {
  std::vector<int64_t> start;  // k + 1
  std::vector<int64_t> order;  // n row indices, grouped by class
};

ClassRows sort_by_class(const int64_t* labels, int64_t n, int64_t k) {
  ClassRows rows;
  rows.start.assign(static_cast<size_t>(k) + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++rows.start[labels[i] + 1];
  for (int64_t c = 0; c < k; ++c) rows.start[c + 1] += rows.start[c];
  std::vector<int64_t> next(rows.start.begin(), rows.start.end() - 1);
  rows.order.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rows.order[next[labels[i]]++] = i;
  return rows;
}

// Heaviest column blocks first (a block's cost grows with j1), so dynamic scheduling ends even.
std::vector<Task> make_tasks(const ClassRows& rows, int64_t k, int64_t d, int64_t block_cols) {
  std::vector<Task> tasks;
  const int64_t blocks = (d + block_cols - 1) / block_cols;
  for (int64_t b = blocks - 1; b >= 0; --b) {
    for (int64_t c = 0; c < k; ++c) {
      if (rows.start[c + 1] > rows.start[c]) {
        tasks.push_back({c, b * block_cols, std::min(d, (b + 1) * block_cols)});
      }
    }
  }
  return tasks;
}

// Side of the square tiles add_panel walks: a tile's rows of the Gram (both the (i, j) rows
// and the mirrored (j, i) rows, 2 x 32 x 32 doubles = 16 KiB) stay in L1 while it is added.
constexpr int64_t kAddTile = 32;

// gram[c] entries (i, j) and (j, i), j in [j0, j1), i <= j, += the column-major panel
// (j1 x width, ld j1) whose rows i < j0 come from the GEMM and rows j0.. from the SYRK's upper
// triangle. Walked in square tiles so the mirrored, strided writes stay in cache.
// A bucket's products stay normal in TX while its largest |entry| lies in
// [2^low, 2^high]: squares of up to 1024 rows below TX's largest value, and far above its
// smallest normal one. Outside, the bucket is scaled by a power of two (exact) and its panel
// scaled back on the way into the Gram, so rows of 1e-30 or 1e19 in float32 are neither lost
// nor turned into Inf (1e-30 squared is below float32's range, 1e19 squared summed is past it).
template <typename TX>
struct ProductRange;
template <>
struct ProductRange<float> {
  static constexpr int low = -40, high = 50;
};
template <>
struct ProductRange<double> {
  static constexpr int low = -400, high = 400;
};

// Bits of a float with the sign cleared, as a signed integer of the same width: for finite
// values their order is the order of |value|, and an integer max vectorises where a
// floating-point one (NaN rules) does not.
template <typename TX>
struct MagnitudeBits;
template <>
struct MagnitudeBits<float> {
  using type = int32_t;
  static constexpr type mask = 0x7fffffff;
};
template <>
struct MagnitudeBits<double> {
  using type = int64_t;
  static constexpr type mask = 0x7fffffffffffffffLL;
};

// Copy m rows of x (first `cols` columns, in `order`) into the row-major bucket; returns the
// largest |entry| copied.
template <typename TX>
TX gather_rows(TX* bucket, const TX* x, const int64_t* order, int64_t m, int64_t d,
               int64_t cols) {
  for (int64_t r = 0; r < m; ++r) {
    std::memcpy(bucket + r * cols, x + order[r] * d, sizeof(TX) * static_cast<size_t>(cols));
  }
  using Bits = typename MagnitudeBits<TX>::type;
  Bits peak = 0;
  const int64_t count = m * cols;
  for (int64_t e = 0; e < count; ++e) {
    Bits bits;
    std::memcpy(&bits, bucket + e, sizeof(Bits));
    bits &= MagnitudeBits<TX>::mask;
    peak = bits > peak ? bits : peak;
  }
  TX magnitude;
  std::memcpy(&magnitude, &peak, sizeof(TX));
  return magnitude;
}

// The power of two 2^e that brings `peak` near 1 when it lies outside ProductRange, else 0.
// |e| is capped where 2^-e stops being a normal TX (126 for float): a subnormal peak (down to
// 2^-149) times 2^149 would be Inf in float; capped, it lands at 2^-23 or above, in range.
template <typename TX>
int rescale_exponent(TX peak) {
  if (peak == TX(0)) return 0;
  const int exponent = std::ilogb(peak);
  if (exponent >= ProductRange<TX>::low && exponent <= ProductRange<TX>::high) return 0;
  constexpr int cap = 1 - std::numeric_limits<TX>::min_exponent;  // 2^-cap: the least normal
  return std::min(std::max(exponent, -cap), cap);
}

template <typename TX, typename TG>
void add_panel(TG* gram_c, int64_t d, const TX* panel, int64_t j0, int64_t j1, TG factor) {
  for (int64_t jt = j0; jt < j1; jt += kAddTile) {
    const int64_t j_end = std::min(j1, jt + kAddTile);
    for (int64_t it = 0; it < j_end; it += kAddTile) {
      const int64_t i_end = std::min(j_end, it + kAddTile);
      for (int64_t j = jt; j < j_end; ++j) {
        const TX* column = panel + (j - j0) * j1;
        const int64_t last = std::min(i_end, j);  // entries strictly above the diagonal
        for (int64_t i = it; i < last; ++i) {
          const TG value = static_cast<TG>(column[i]) * factor;
          gram_c[i * d + j] += value;
          gram_c[j * d + i] += value;
        }
        if (j >= it && j < i_end) gram_c[j * d + j] += static_cast<TG>(column[j]) * factor;
      }
    }
  }
}

// Panel rows 0..j1 of columns [j0, j1) of the bucket's Gram, column-major (ld j1): rows i < j0
// by GEMM; the diagonal block's upper triangle by SYRK, or, in sub-panels of panel_cols, by
// GEMMs that also fill the lower half of each small diagonal block (never read). Narrow panels
// skip the products below the diagonal that one wide GEMM would do, and on small Grams (d <=
// 256) a 32-wide GEMM panel runs faster than a SYRK of the whole block (bench/RESULTS.md).
template <typename TX>
void bucket_panel(const TX* bucket, int64_t m, int64_t j0, int64_t j1, int64_t panel_cols,
                  TX* panel) {
  const int ld = static_cast<int>(j1);
  if (panel_cols >= j1 - j0) {
    if (j0 > 0) {
      gemm<TX>('N', 'T', static_cast<int>(j0), static_cast<int>(j1 - j0), static_cast<int>(m),
               TX(1), bucket, ld, bucket + j0, ld, TX(0), panel, ld);
    }
    syrk<TX>('U', 'N', static_cast<int>(j1 - j0), static_cast<int>(m), TX(1), bucket + j0, ld,
             TX(0), panel + j0, ld);
    return;
  }
  for (int64_t p0 = j0; p0 < j1; p0 += panel_cols) {
    const int64_t p1 = std::min(j1, p0 + panel_cols);
    // Rows 0..p1 of columns p0..p1: Z[0:p1, :] . Z[p0:p1, :]^T into the panel's columns p0..p1.
    gemm<TX>('N', 'T', static_cast<int>(p1), static_cast<int>(p1 - p0), static_cast<int>(m),
             TX(1), bucket, ld, bucket + p0, ld, TX(0), panel + (p0 - j0) * j1, ld);
  }
}

// Returns the largest |entry| the task gathered (NaN or Inf if it met one: that bucket is then
// left out, and the caller reports the rows).
template <typename TX, typename TG>
TX run_task(const Task& task, TG* gram, int64_t d, const TX* x, const ClassRows& rows,
            int64_t bucket_rows, int64_t panel_cols, TX* bucket, TX* panel) {
  const int64_t j0 = task.first_col, j1 = task.end_col;
  const int64_t* order = rows.order.data();
  TX task_peak = TX(0);
  for (int64_t s = rows.start[task.label]; s < rows.start[task.label + 1]; s += bucket_rows) {
    const int64_t m = std::min(bucket_rows, rows.start[task.label + 1] - s);
    const TX peak = gather_rows(bucket, x, order + s, m, d, j1);
    if (!(peak <= std::numeric_limits<TX>::max())) return peak;  // NaN or Inf
    task_peak = std::max(task_peak, peak);
    const int exponent = rescale_exponent(peak);
    if (exponent != 0) {
      const TX down = std::ldexp(TX(1), -exponent);
      for (int64_t e = 0; e < m * j1; ++e) bucket[e] *= down;
    }
    const TG factor = std::ldexp(TG(1), 2 * exponent);  // undoes the bucket's scale, squared
    // The bucket, row-major m x j1, is column-major Z = X_bucket^T (j1 x m, ld j1).
    bucket_panel(bucket, m, j0, j1, panel_cols, panel);
    add_panel(gram + task.label * d * d, d, panel, j0, j1, factor);
  }
  return task_peak;
}

}  // namespace

template <typename TX, typename TG>
double gram_update_cpu(TG* gram, int64_t k, int64_t d, const TX* x, int64_t n,
                       const int64_t* labels, int64_t bucket_rows, int64_t block_cols,
                       int64_t panel_cols, int threads) {
  if (n == 0) return 0.0;
  if (panel_cols < 1) panel_cols = block_cols;
  const ClassRows rows = sort_by_class(labels, n, k);
  const std::vector<Task> tasks = make_tasks(rows, k, d, block_cols);
  const int workers = worker_count(threads);
  const size_t bucket_size = static_cast<size_t>(bucket_rows) * d;
  const size_t panel_size = static_cast<size_t>(d) * std::min(block_cols, d);
  std::vector<TX> buckets(workers * bucket_size);
  std::vector<TX> panels(workers * panel_size);
  std::vector<TX> peaks(workers, TX(0));
  std::vector<uint8_t> nonfinite(workers, 0);
  const int64_t count = static_cast<int64_t>(tasks.size());

#pragma omp parallel for num_threads(workers) schedule(dynamic, 1)
  for (int64_t t = 0; t < count; ++t) {
    const size_t w = static_cast<size_t>(worker_index());
    const TX peak = run_task(tasks[t], gram, d, x, rows, bucket_rows, panel_cols,
                             buckets.data() + w * bucket_size, panels.data() + w * panel_size);
    if (peak <= std::numeric_limits<TX>::max()) {
      peaks[w] = std::max(peaks[w], peak);
    } else {
      nonfinite[w] = 1;
    }
  }
  for (int w = 0; w < workers; ++w) {
    if (nonfinite[w]) return std::numeric_limits<double>::quiet_NaN();
  }
  return static_cast<double>(*std::max_element(peaks.begin(), peaks.end()));
}

template double gram_update_cpu<float, float>(float*, int64_t, int64_t, const float*, int64_t,
                                            const int64_t*, int64_t, int64_t, int64_t, int);
template double gram_update_cpu<float, double>(double*, int64_t, int64_t, const float*, int64_t,
                                             const int64_t*, int64_t, int64_t, int64_t, int);
template double gram_update_cpu<double, double>(double*, int64_t, int64_t, const double*, int64_t,
                                              const int64_t*, int64_t, int64_t, int64_t, int);

}  // namespace masc_fast
