// Portable vectorization helpers for the CPU kernels.
//
// Extensions are compiled for the baseline x86-64 ISA (SSE2), so the hot loops would never use AVX2 or
// AVX-512. Functions marked TORCHXC_CPU_MULTIVERSION are compiled three times (x86-64-v4 = AVX-512,
// x86-64-v3 = AVX2+FMA, baseline) and the best clone is picked once at load time by the dynamic loader
// (GCC's target_clones / ifunc). Their loops are written so that GCC vectorizes them (`omp simd`
// reductions, no data-dependent control flow); helpers they call are TORCHXC_ALWAYS_INLINE so that they
// are compiled for the clone's ISA too. Other compilers and platforms get the baseline build.
#pragma once

#include <cstdlib>
#include <cstring>

namespace torchxc {
// A switch read from the environment: on when set to anything but "" or "0" (TORCHXC_*_NO_AVX2=0 keeps AVX2 on).
inline bool env_switch(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}
}  // namespace torchxc

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(TORCHXC_NO_MULTIVERSION)
#define TORCHXC_CPU_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TORCHXC_CPU_MULTIVERSION
#endif

#if defined(__GNUC__) || defined(__clang__)
#define TORCHXC_ALWAYS_INLINE inline __attribute__((always_inline))
#define TORCHXC_ALWAYS_INLINE_LAMBDA __attribute__((always_inline))
#else
#define TORCHXC_ALWAYS_INLINE inline
#define TORCHXC_ALWAYS_INLINE_LAMBDA
#endif

// `omp simd` pragmas take effect with -fopenmp (set by setup.py and CMakeLists.txt for at::parallel_for).
#if defined(__GNUC__) || defined(__clang__)
#define TORCHXC_PRAGMA(x) _Pragma(#x)
#else
#define TORCHXC_PRAGMA(x)
#endif

// Hand-written AVX-512 kernels (compress-stores have no portable spelling), selected at run time.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) && !defined(TORCHXC_NO_MULTIVERSION)
#include <immintrin.h>
#define TORCHXC_HAVE_AVX512_COLLECT 1
#define TORCHXC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#else
#define TORCHXC_HAVE_AVX512_COLLECT 0
#endif
