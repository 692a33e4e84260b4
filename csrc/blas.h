// The four BLAS routines the ops need, called through function pointers.
//
// Route: the pointers are taken at import time from scipy.linalg.cython_blas.__pyx_capi__ (the
// BLAS SciPy already ships and loads, as scikit-learn does), so the build links no BLAS, needs
// nothing from the OS package manager, and is not built against PyTorch. bindings.cpp fills the
// table once in PYBIND11_MODULE; the op files call gemm<T>/syrk<T> below. The two GEMMs may
// then be swapped for faster ones found at run time (use_gemm: torch's MKL, whose sgemm runs
// 1.7x SciPy's OpenBLAS on the AVX-512 dev box; masc_fast.backends.cpu_gemm chooses).
//
// Conventions are Fortran BLAS: column-major, every argument by pointer, LP64 `int` sizes
// (SciPy's OpenBLAS is 32-bit-int), so callers keep every size and leading dimension below
// 2^31 (bindings.cpp checks). The ops call these from inside their own OpenMP threads, so the
// BLAS pool must be limited to one thread around each call (masc_fast.backends.cpp_ops does this
// with threadpoolctl); otherwise each thread would start a full BLAS pool and oversubscribe.
#pragma once

namespace masc_fast {

using sgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*,
                          const float*, const float*, const int*, const float*, const int*,
                          const float*, float*, const int*);
using dgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*,
                          const double*, const double*, const int*, const double*, const int*,
                          const double*, double*, const int*);
using ssyrk_fn = void (*)(const char*, const char*, const int*, const int*, const float*,
                          const float*, const int*, const float*, float*, const int*);
using dsyrk_fn = void (*)(const char*, const char*, const int*, const int*, const double*,
                          const double*, const int*, const double*, double*, const int*);

// MKL's MKL_Set_Num_Threads_Local (C entry, by value): sets the calling thread's BLAS thread
// count, returns the previous one (0: the global setting).
using threads_local_fn = int (*)(int);

struct BlasTable {
  sgemm_fn sgemm = nullptr;
  dgemm_fn dgemm = nullptr;
  ssyrk_fn ssyrk = nullptr;
  dsyrk_fn dsyrk = nullptr;
  // Set when the GEMMs come from a BLAS whose pool threadpoolctl cannot limit (torch's MKL):
  // each GEMM then runs with the calling thread's count at 1 (see use_gemm in bindings.cpp).
  threads_local_fn gemm_threads_local = nullptr;
};

// The process-wide table; filled by bindings.cpp before any op can run.
BlasTable& blas_table();

// C = alpha * op(A) * op(B) + beta * C, column-major (Fortran ?gemm).
template <typename T>
void gemm(char trans_a, char trans_b, int m, int n, int k, T alpha, const T* a, int lda,
          const T* b, int ldb, T beta, T* c, int ldc);

// C = alpha * A * A^T + beta * C on the `uplo` triangle of the n x n C, A n x k ('N').
template <typename T>
void syrk(char uplo, char trans, int n, int k, T alpha, const T* a, int lda, T beta, T* c,
          int ldc);

}  // namespace masc_fast
