// BLAS dispatch through the function-pointer table; see blas.h for the route and conventions.
#include "blas.h"

namespace masc_fast {

BlasTable& blas_table() {
  static BlasTable table;
  return table;
}

namespace {

// Runs one GEMM with the calling thread's BLAS count at 1 where the table says how.
class OneThreadGemm {
 public:
  OneThreadGemm() : set_(blas_table().gemm_threads_local), previous_(set_ ? set_(1) : 0) {}
  ~OneThreadGemm() {
    if (set_) set_(previous_);
  }
  OneThreadGemm(const OneThreadGemm&) = delete;
  OneThreadGemm& operator=(const OneThreadGemm&) = delete;

 private:
  threads_local_fn set_;
  int previous_;
};

}  // namespace

template <>
void gemm<float>(char trans_a, char trans_b, int m, int n, int k, float alpha, const float* a,
                 int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  OneThreadGemm one_thread;
  blas_table().sgemm(&trans_a, &trans_b, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

template <>
void gemm<double>(char trans_a, char trans_b, int m, int n, int k, double alpha, const double* a,
                  int lda, const double* b, int ldb, double beta, double* c, int ldc) {
  OneThreadGemm one_thread;
  blas_table().dgemm(&trans_a, &trans_b, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

template <>
void syrk<float>(char uplo, char trans, int n, int k, float alpha, const float* a, int lda,
                 float beta, float* c, int ldc) {
  blas_table().ssyrk(&uplo, &trans, &n, &k, &alpha, a, &lda, &beta, c, &ldc);
}

template <>
void syrk<double>(char uplo, char trans, int n, int k, double alpha, const double* a, int lda,
                  double beta, double* c, int ldc) {
  blas_table().dsyrk(&uplo, &trans, &n, &k, &alpha, a, &lda, &beta, c, &ldc);
}

}  // namespace masc_fast
