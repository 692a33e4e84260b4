// OpenMP when the build found it, one thread otherwise; the ops size their per-thread scratch
// with worker_count() so the serial build allocates one slot.
#pragma once

#ifdef _OPENMP
#include <omp.h>
#endif

namespace masc_fast {

// Threads a parallel region asked for `requested` threads gets (1 without OpenMP).
inline int worker_count(int requested) {
#ifdef _OPENMP
  return requested < 1 ? 1 : requested;
#else
  (void)requested;
  return 1;
#endif
}

// Index of the calling thread inside a parallel region, in [0, worker_count).
inline int worker_index() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline constexpr bool has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace masc_fast
