// PYBIND11_MODULE(_C): BLAS loading, argument checks, output allocation, GIL release; nothing
// else. Arrays are taken as plain numpy arrays and checked here by name (dtype -> TypeError,
// layout and shape -> ValueError); nothing is converted or copied. The Python adapter
// (masc_fast/backends/cpp_ops.py) prepares inputs and limits the BLAS pool around each call.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "blas.h"
#include "checks.h"
#include "gram_update.h"
#include "parallel.h"
#include "subspace_scores.h"

namespace py = pybind11;

namespace {

std::string shape_of(const py::array& a) {
  std::string text = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    text += std::to_string(a.shape(i)) + (i + 1 < a.ndim() || a.ndim() == 1 ? "," : "");
    if (i + 1 < a.ndim()) text += " ";
  }
  return text + ")";
}

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

template <typename T>
bool has_dtype(const py::array& a) {
  return a.dtype().is(py::dtype::of<T>());
}

bool is_float(const py::array& a) { return has_dtype<float>(a) || has_dtype<double>(a); }

// ndim, c-contiguity and alignment: what protects memory below the boundary.
void check_layout(const py::array& a, const char* name, py::ssize_t ndim) {
  MASC_CHECK(a.ndim() == ndim, std::string(name) + " must be " + std::to_string(ndim) +
                                   "-D, got shape " + shape_of(a));
  MASC_CHECK((a.flags() & py::array::c_style) != 0,
             std::string(name) + " must be c-contiguous (no copy is made); got strides of a " +
                 "non-contiguous " + shape_of(a) + " array");
  MASC_CHECK((a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_) != 0,
             std::string(name) + " must be aligned");
}

void check_blas_size(int64_t value, const char* what) {
  MASC_CHECK(value <= INT_MAX, std::string(what) + " = " + std::to_string(value) +
                                   " exceeds the 32-bit BLAS limit 2^31 - 1");
}

[[noreturn]] void type_error(const std::string& message) {
  throw py::type_error("masc_fast._C: " + message);
}

void check_offsets(const py::array& offsets, int64_t R) {
  if (!has_dtype<int64_t>(offsets)) type_error("offsets must be int64, got " + dtype_name(offsets));
  check_layout(offsets, "offsets", 1);
  MASC_CHECK(offsets.shape(0) >= 1, "offsets must have at least one entry (k + 1 >= 1)");
  const int64_t k = offsets.shape(0) - 1;
  const int64_t* off = static_cast<const int64_t*>(offsets.data());
  MASC_CHECK(off[0] == 0, "offsets[0] must be 0, got " + std::to_string(off[0]));
  MASC_CHECK(off[k] == R, "offsets[-1] must equal basis.shape[1] = " + std::to_string(R) +
                              ", got " + std::to_string(off[k]));
  for (int64_t c = 0; c < k; ++c) {
    MASC_CHECK(off[c + 1] >= off[c], "offsets must be non-decreasing, but offsets[" +
                                         std::to_string(c + 1) + "] = " +
                                         std::to_string(off[c + 1]) + " < offsets[" +
                                         std::to_string(c) + "] = " + std::to_string(off[c]));
  }
}

void check_threads(int threads) {
  MASC_CHECK(threads >= 1, "threads must be >= 1, got " + std::to_string(threads));
}

template <typename T>
py::tuple subspace_scores_typed(const py::array& x, const py::array& basis,
                                const py::array& offsets, const uint8_t* flags,
                                int64_t block_rows, int threads) {
  const int64_t n = x.shape(0), d = x.shape(1), R = basis.shape(1);
  const int64_t k = offsets.shape(0) - 1;
  py::array_t<T> scores(std::vector<py::ssize_t>{n, k});
  py::array_t<int64_t> pred(std::vector<py::ssize_t>{n});
  const T* x_ptr = static_cast<const T*>(x.data());
  const T* basis_ptr = static_cast<const T*>(basis.data());
  const int64_t* off = static_cast<const int64_t*>(offsets.data());
  T* scores_ptr = scores.mutable_data();
  int64_t* pred_ptr = pred.mutable_data();
  {
    py::gil_scoped_release release;
    masc_fast::subspace_scores_cpu<T>(x_ptr, n, d, basis_ptr, R, off, flags, k, block_rows,
                                      threads, scores_ptr, pred_ptr);
  }
  return py::make_tuple(scores, pred);
}

py::tuple subspace_scores(const py::array& x, const py::array& basis, const py::array& offsets,
                          int64_t block_rows, int threads, const py::object& complement) {
  if (!is_float(x)) type_error("x must be float32 or float64, got " + dtype_name(x));
  if (!basis.dtype().is(x.dtype())) {
    type_error("basis dtype " + dtype_name(basis) + " differs from x dtype " + dtype_name(x));
  }
  check_layout(x, "x", 2);
  check_layout(basis, "basis", 2);
  MASC_CHECK(basis.shape(0) == x.shape(1), "basis must have x.shape[1] = " +
                                                std::to_string(x.shape(1)) + " rows, got shape " +
                                                shape_of(basis));
  MASC_CHECK(x.shape(1) >= 1, "x must have at least one column, got shape " + shape_of(x));
  check_offsets(offsets, basis.shape(1));
  // No flags: every class is scored directly (one zero byte per class).
  std::vector<uint8_t> no_flags(static_cast<size_t>(offsets.shape(0) - 1), 0);
  const uint8_t* flags = no_flags.data();
  if (!complement.is_none()) {
    if (!py::isinstance<py::array>(complement)) {
      type_error("complement must be a numpy array of uint8 or bool, or None");
    }
    const py::array array = complement.cast<py::array>();
    if (!has_dtype<uint8_t>(array) && !has_dtype<bool>(array)) {
      type_error("complement must be uint8 or bool, got " + dtype_name(array));
    }
    check_layout(array, "complement", 1);
    MASC_CHECK(array.shape(0) == offsets.shape(0) - 1,
               "complement must have one entry per class (" +
                   std::to_string(offsets.shape(0) - 1) + "), got shape " + shape_of(array));
    flags = static_cast<const uint8_t*>(array.data());
  }
  MASC_CHECK(block_rows >= 1, "block_rows must be >= 1, got " + std::to_string(block_rows));
  check_threads(threads);
  check_blas_size(x.shape(1), "x.shape[1] (d)");
  check_blas_size(basis.shape(1), "basis.shape[1] (R)");
  check_blas_size(block_rows, "block_rows");
  if (has_dtype<float>(x)) {
    return subspace_scores_typed<float>(x, basis, offsets, flags, block_rows, threads);
  }
  return subspace_scores_typed<double>(x, basis, offsets, flags, block_rows, threads);
}

template <typename TX, typename TG>
double gram_update_typed(py::array& gram, const py::array& x, const py::array& labels,
                         int64_t bucket_rows, int64_t block_cols, int64_t panel_cols,
                         int threads) {
  const int64_t k = gram.shape(0), d = gram.shape(1), n = x.shape(0);
  TG* gram_ptr = static_cast<TG*>(gram.mutable_data());
  const TX* x_ptr = static_cast<const TX*>(x.data());
  const int64_t* label_ptr = static_cast<const int64_t*>(labels.data());
  py::gil_scoped_release release;
  return masc_fast::gram_update_cpu<TX, TG>(gram_ptr, k, d, x_ptr, n, label_ptr, bucket_rows,
                                            block_cols, panel_cols, threads);
}

double gram_update(py::array gram, const py::array& x, const py::array& labels,
                   int64_t bucket_rows, int64_t block_cols, int threads, int64_t panel_cols) {
  if (!is_float(gram)) type_error("gram must be float32 or float64, got " + dtype_name(gram));
  if (!is_float(x)) type_error("x must be float32 or float64, got " + dtype_name(x));
  if (has_dtype<float>(gram) && has_dtype<double>(x)) {
    type_error("x is float64 but gram is float32; a float64 product cannot be added into a "
               "float32 Gram without losing it");
  }
  if (!has_dtype<int64_t>(labels)) type_error("labels must be int64, got " + dtype_name(labels));
  check_layout(gram, "gram", 3);
  MASC_CHECK(gram.writeable(), "gram must be writeable (it is updated in place)");
  check_layout(x, "x", 2);
  check_layout(labels, "labels", 1);
  const int64_t k = gram.shape(0), d = gram.shape(1), n = x.shape(0);
  MASC_CHECK(gram.shape(2) == d, "gram must be (k, d, d), got shape " + shape_of(gram));
  MASC_CHECK(d >= 1, "gram must have d >= 1, got shape " + shape_of(gram));
  MASC_CHECK(x.shape(1) == d, "x must have gram.shape[1] = " + std::to_string(d) +
                                  " columns, got shape " + shape_of(x));
  MASC_CHECK(labels.shape(0) == n, "labels must have x.shape[0] = " + std::to_string(n) +
                                       " entries, got shape " + shape_of(labels));
  MASC_CHECK(bucket_rows >= 1, "bucket_rows must be >= 1, got " + std::to_string(bucket_rows));
  MASC_CHECK(block_cols >= 1, "block_cols must be >= 1, got " + std::to_string(block_cols));
  MASC_CHECK(panel_cols >= 0, "panel_cols must be >= 0, got " + std::to_string(panel_cols));
  check_threads(threads);
  check_blas_size(d, "gram.shape[1] (d)");
  check_blas_size(bucket_rows, "bucket_rows");
  const int64_t* label_ptr = static_cast<const int64_t*>(labels.data());
  for (int64_t i = 0; i < n; ++i) {
    MASC_CHECK(label_ptr[i] >= 0 && label_ptr[i] < k,
               "labels[" + std::to_string(i) + "] = " + std::to_string(label_ptr[i]) +
                   " is outside [0, " + std::to_string(k) + ") (gram has k = " +
                   std::to_string(k) + " classes)");
  }
  if (has_dtype<double>(gram) && has_dtype<double>(x)) {
    return gram_update_typed<double, double>(gram, x, labels, bucket_rows, block_cols, panel_cols,
        threads);
  } else if (has_dtype<double>(gram)) {
    return gram_update_typed<float, double>(gram, x, labels, bucket_rows, block_cols, panel_cols,
        threads);
  } else {
    return gram_update_typed<float, float>(gram, x, labels, bucket_rows, block_cols, panel_cols,
        threads);
  }
}

// Where the table's GEMMs come from now (blas_source()).
std::string& gemm_source() {
  static std::string source = "scipy.linalg.cython_blas";
  return source;
}

// Fill the BLAS table from scipy.linalg.cython_blas (see blas.h for why this route).
void load_blas() {
  py::dict capi = py::module_::import("scipy.linalg.cython_blas").attr("__pyx_capi__");
  auto pointer = [&capi](const char* name) {
    py::object capsule = capi[name];
    void* address = PyCapsule_GetPointer(capsule.ptr(), PyCapsule_GetName(capsule.ptr()));
    if (address == nullptr) throw py::error_already_set();
    return address;
  };
  masc_fast::BlasTable& table = masc_fast::blas_table();
  table.sgemm = reinterpret_cast<masc_fast::sgemm_fn>(pointer("sgemm"));
  table.dgemm = reinterpret_cast<masc_fast::dgemm_fn>(pointer("dgemm"));
  table.ssyrk = reinterpret_cast<masc_fast::ssyrk_fn>(pointer("ssyrk"));
  table.dsyrk = reinterpret_cast<masc_fast::dsyrk_fn>(pointer("dsyrk"));
  table.gemm_threads_local = nullptr;
  gemm_source() = "scipy.linalg.cython_blas";
}

// Take sgemm/dgemm (Fortran BLAS, LP64) from the given addresses; threads_local (0: none) is
// MKL's MKL_Set_Num_Threads_Local, called around each GEMM to keep it on its thread.
void use_gemm(uintptr_t sgemm, uintptr_t dgemm, uintptr_t threads_local, std::string source) {
  MASC_CHECK(sgemm != 0 && dgemm != 0, "use_gemm needs both sgemm and dgemm addresses");
  masc_fast::BlasTable& table = masc_fast::blas_table();
  table.sgemm = reinterpret_cast<masc_fast::sgemm_fn>(sgemm);
  table.dgemm = reinterpret_cast<masc_fast::dgemm_fn>(dgemm);
  table.gemm_threads_local = reinterpret_cast<masc_fast::threads_local_fn>(threads_local);
  gemm_source() = std::move(source);
}

constexpr const char* kSubspaceScoresDoc = R"doc(
subspace_scores(x, basis, offsets, block_rows, threads, complement=None) -> (scores, pred)

Fused MASC scoring: scores[i, c] = min(||U_c^T x_i||^2 / ||x_i||^2, 1), or, where complement[c],
1 - ||W_c^T x_i||^2 / ||x_i||^2 with W_c the class's columns, clamped to [0, 1] (0 for a zero row
or an absent class: empty segment, no flag) and pred[i] = first present class with the largest
score, -1 if none is present.
One BLAS GEMM per block of block_rows rows into a per-thread tile; never n x R memory.

x: (n, d) float32/float64; basis: (d, R) same dtype; offsets: (k + 1,) int64 with
offsets[0] = 0, offsets[-1] = R, non-decreasing; complement: None or (k,) uint8 or bool. All c-contiguous, nothing is converted.
Returns scores (n, k) of x's dtype and pred (n,) int64. TypeError for a wrong dtype,
ValueError for a wrong layout, shape or offsets. Limit the BLAS pool to one thread around the
call (masc_fast.backends.cpp_ops does).
)doc";

constexpr const char* kGramUpdateDoc = R"doc(
gram_update(gram, x, labels, bucket_rows, block_cols, threads, panel_cols=0) -> float

gram[c] += X_c^T X_c in place for every class c in labels, by class buckets of <= bucket_rows
rows flushed with BLAS SYRK (diagonal blocks) and GEMM (blocks above it), in column blocks of
<= block_cols; with 0 < panel_cols < block width, by GEMM sub-panels of panel_cols columns
instead (each from row 0 through its diagonal block). Returns the largest |x| entry it read,
or NaN when it met a NaN or Inf (that bucket is left out).
gram: (k, d, d) float32/float64, writeable; x: (n, d) float32/float64 (float32
rows may go into a float64 Gram); labels: (n,) int64 in [0, k). All c-contiguous.
TypeError for a wrong dtype, ValueError for a wrong layout, shape or label.
)doc";

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Private C++ ops of masc_fast; call them through masc_fast.backends.cpp_ops.";
  m.attr("__version__") = MASC_FAST_VERSION;
  m.attr("has_openmp") = masc_fast::has_openmp();
  load_blas();
  m.def(
      "blas_source",
      [] { return "GEMM from " + gemm_source() + ", SYRK from scipy.linalg.cython_blas"; },
      "Where the ops' BLAS routines come from.");
  m.def("use_gemm", &use_gemm, py::arg("sgemm"), py::arg("dgemm"), py::arg("threads_local"),
        py::arg("source"),
        "Call sgemm/dgemm at these addresses (Fortran BLAS, LP64); threads_local: MKL's "
        "MKL_Set_Num_Threads_Local or 0. Not thread-safe against running ops.");
  m.def("use_scipy_blas", &load_blas, "Back to SciPy's BLAS for every routine.");

  m.def("subspace_scores", &subspace_scores, py::arg("x").noconvert(),
        py::arg("basis").noconvert(), py::arg("offsets").noconvert(), py::arg("block_rows"),
        py::arg("threads"), py::arg("complement") = py::none(), kSubspaceScoresDoc);
  m.def("gram_update", &gram_update, py::arg("gram").noconvert(), py::arg("x").noconvert(),
        py::arg("labels").noconvert(), py::arg("bucket_rows"), py::arg("block_cols"),
        py::arg("threads"), py::arg("panel_cols") = 0, kGramUpdateDoc);
}
