// PYBIND11_MODULE(_C): argument checks, output allocation, GIL release; nothing else.
// Arrays are bound c-contiguous with .noconvert(), so a wrong dtype or layout raises TypeError
// instead of being copied; the Python adapter (masc_fast/backends/cpp_ops.py) prepares inputs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "checks.h"
#include "projection_scores.h"

namespace py = pybind11;

namespace {

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

template <typename T>
py::tuple projection_scores(const CArray<T>& proj, const CArray<int64_t>& offsets,
                            const CArray<T>& sq_norms) {
  MASC_CHECK(proj.ndim() == 2,
             "proj must be 2-D (n, R), got " + std::to_string(proj.ndim()) + "-D");
  MASC_CHECK(offsets.ndim() == 1,
             "offsets must be 1-D (k + 1,), got " + std::to_string(offsets.ndim()) + "-D");
  MASC_CHECK(offsets.shape(0) >= 1, "offsets must have at least one entry (k + 1 >= 1)");
  MASC_CHECK(sq_norms.ndim() == 1,
             "sq_norms must be 1-D (n,), got " + std::to_string(sq_norms.ndim()) + "-D");

  const int64_t n = proj.shape(0);
  const int64_t R = proj.shape(1);
  const int64_t k = offsets.shape(0) - 1;
  const int64_t* off = offsets.data();

  MASC_CHECK(off[0] == 0, "offsets[0] must be 0, got " + std::to_string(off[0]));
  MASC_CHECK(off[k] == R, "offsets[-1] must equal proj.shape[1] = " + std::to_string(R) +
                              ", got " + std::to_string(off[k]));
  for (int64_t c = 0; c < k; ++c) {
    MASC_CHECK(off[c + 1] >= off[c], "offsets must be non-decreasing, but offsets[" +
                                         std::to_string(c + 1) + "] = " +
                                         std::to_string(off[c + 1]) + " < offsets[" +
                                         std::to_string(c) + "] = " + std::to_string(off[c]));
  }
  MASC_CHECK(sq_norms.shape(0) == n, "sq_norms must have length proj.shape[0] = " +
                                         std::to_string(n) + ", got " +
                                         std::to_string(sq_norms.shape(0)));

  CArray<T> scores(std::vector<py::ssize_t>{n, k});
  CArray<int64_t> pred(std::vector<py::ssize_t>{n});
  const T* proj_ptr = proj.data();
  const T* sq_ptr = sq_norms.data();
  T* scores_ptr = scores.mutable_data();
  int64_t* pred_ptr = pred.mutable_data();
  {
    py::gil_scoped_release release;
    masc_fast::projection_scores_cpu<T>(proj_ptr, n, R, off, k, sq_ptr, scores_ptr, pred_ptr);
  }
  return py::make_tuple(scores, pred);
}

constexpr const char* kProjectionScoresDoc = R"doc(
projection_scores(proj, offsets, sq_norms) -> (scores, pred)

MASC scores from a projection proj = X @ [U_1 .. U_k].

scores[i, c] = min(||proj[i, offsets[c]:offsets[c+1]]||^2 / sq_norms[i], 1), or 0 when
sq_norms[i] == 0 or the segment of class c is empty (an absent class, never predicted).
pred[i] is the first present class with the largest score, -1 if none is present.

proj: (n, R) float32 or float64, c-contiguous. offsets: (k + 1,) int64, non-decreasing,
offsets[0] = 0, offsets[-1] = R. sq_norms: (n,) same dtype as proj.
Returns scores (n, k) of proj's dtype and pred (n,) int64.
Raises TypeError for a wrong dtype or layout (no conversion), ValueError for bad shapes/offsets.
)doc";

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Private C++ ops of masc_fast; call them through masc_fast.backends.cpp_ops.";
  m.attr("__version__") = MASC_FAST_VERSION;

  m.def("projection_scores", &projection_scores<float>, py::arg("proj").noconvert(),
        py::arg("offsets").noconvert(), py::arg("sq_norms").noconvert(), kProjectionScoresDoc);
  m.def("projection_scores", &projection_scores<double>, py::arg("proj").noconvert(),
        py::arg("offsets").noconvert(), py::arg("sq_norms").noconvert());
}
