// Vector-width clones of the ops' own loops (not the BLAS calls, which pick theirs at run time).
//
// The extension is built without -march so one wheel runs on any x86-64; that leaves the loops
// masc_fast writes itself (scoring epilogue, bucket gather) at SSE2 width. MASC_SIMD_CLONES
// compiles a function once per target below and lets the loader pick the widest the CPU has
// (GCC/Clang target_clones, an ifunc on x86-64 Linux); elsewhere it is the one default build.
// Helpers the clone calls must be inline (MASC_INLINE) so they are compiled at its width.
#pragma once

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__))
#define MASC_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MASC_SIMD_CLONES
#endif

#if defined(__GNUC__) || defined(__clang__)
#define MASC_INLINE inline __attribute__((always_inline))
#else
#define MASC_INLINE inline
#endif
