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

// Below e^kExpMin (about 1.8e-38, near FLT_MIN) the float exponentials flush to 0: keeps the exponent n >= -125.
constexpr float kExpMin = -86.9f;

// Cephes' exp on the reduced range: returns p = e^r with xc = n ln2 + r, |r| <= ln2/2, and sets n (an integer in
// float). The polynomial is evaluated in Estrin's form, whose FMA chain is half as long as Horner's (the 8-lane
// loops of the tree sampler wait on it); with 2^n applied, at most 1.03 ulp against exp in double on a grid of
// 6e7 points of [-86.9, 0] (1.02 with Horner's form).
TORCHXC_ALWAYS_INLINE float exp_reduced(float xc, float& n) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer
  n = (xc * kLog2e + kRound) - kRound;
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  const float r2 = r * r;
  const float q01 = 5.0000001201e-1f + 1.6666665459e-1f * r, q23 = 4.1665795894e-2f + 8.3334519073e-3f * r;
  const float q45 = 1.3981999507e-3f + 1.9875691500e-4f * r;
  return (((q45 * r2 + q23) * r2 + q01) * r2 + r) + 1.0f;
}

// e^x in float with at most 1.5 ulp of error (measured on a fine grid).
// Results below e^-86.9 (about 1.8e-38, near FLT_MIN) flush to 0; +-inf and NaN behave as in std::exp.
TORCHXC_ALWAYS_INLINE float vexp(float x) {
  constexpr float kMax = 88.7228394f;  // log(FLT_MAX)
  const bool in_range = (x >= kExpMin) & (x <= kMax);  // false for NaN
  float n;
  const float p = exp_reduced(bsel(in_range, x, 0.0f), n);
  // 2^n for n in [-125, 128], built as 2^(n-1) * 2 so that n = 128 (x near kMax, where p < 1) does not overflow.
  const int32_t e = static_cast<int32_t>(n) + 126;
  const float y = p * __builtin_bit_cast(float, static_cast<uint32_t>(e) << 23) * 2.0f;
  const float out_of_range = bsel(x > kMax, std::numeric_limits<float>::infinity(), 0.0f);
  return bsel(in_range, y, bsel(x != x, x, out_of_range));
}

// e^x for x <= 0 or NaN, without vexp's overflow branch: below e^-86.9 it flushes to 0, NaN stays NaN.
TORCHXC_ALWAYS_INLINE float vexp_nonpos(float x) {
  const bool in_range = x >= kExpMin;  // false for NaN
  float n;
  const float p = exp_reduced(bsel(in_range, x, 0.0f), n);
  const float y = p * __builtin_bit_cast(float, static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
  return bsel(in_range, y, bsel(x != x, x, 0.0f));
}

TORCHXC_ALWAYS_INLINE double vexp(double x) {
  return std::exp(x);
}

}  // namespace torchxc
