// Elementary functions and selects written so that GCC vectorizes the loops that call them, in every
// multiversioned clone (std::exp does not vectorize without -ffast-math, and GCC's if-conversion gives up on
// several correlated `c ? a : b` selects in one loop body for AVX2 and SSE targets, which `bsel` avoids by
// selecting with bit masks). Inline everywhere, so they take the ISA of the caller.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "simd.h"

namespace torchxc {

// c ? a : b, branch-free.
TORCHXC_ALWAYS_INLINE float bsel(bool c, float a, float b) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return __builtin_bit_cast(float, (__builtin_bit_cast(uint32_t, a) & m) | (__builtin_bit_cast(uint32_t, b) & ~m));
}

TORCHXC_ALWAYS_INLINE double bsel(bool c, double a, double b) {
  const uint64_t m = 0ull - static_cast<uint64_t>(c);
  return __builtin_bit_cast(double, (__builtin_bit_cast(uint64_t, a) & m) | (__builtin_bit_cast(uint64_t, b) & ~m));
}

// e^x in float with at most 1.5 ulp of error (Cephes' polynomial on |r| <= ln2/2; measured on a fine grid).
// Results below e^-86.9 (about 1.8e-38, near FLT_MIN) flush to 0; +-inf and NaN behave as in std::exp.
TORCHXC_ALWAYS_INLINE float vexp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  constexpr float kMax = 88.7228394f;    // log(FLT_MAX)
  constexpr float kMin = -86.9f;         // keeps the exponent n >= -125
  const bool in_range = (x >= kMin) & (x <= kMax);  // false for NaN
  const float xc = bsel(in_range, x, 0.0f);
  const float n = (xc * kLog2e + kRound) - kRound;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n for n in [-125, 128], built as 2^(n-1) * 2 so that n = 128 (x near kMax, where p < 1) does not overflow.
  const int32_t e = static_cast<int32_t>(n) + 126;
  const float y = p * __builtin_bit_cast(float, static_cast<uint32_t>(e) << 23) * 2.0f;
  const float out_of_range = bsel(x > kMax, std::numeric_limits<float>::infinity(), 0.0f);
  return bsel(in_range, y, bsel(x != x, x, out_of_range));
}

TORCHXC_ALWAYS_INLINE double vexp(double x) {
  return std::exp(x);
}

}  // namespace torchxc
