// Accumulation types of the CPU kernels and conversions to and from them.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "simd.h"

namespace torchxc {

// float for float, half and bfloat16; double for double.
template <typename S>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename S>
using acc_t = typename AccType<S>::type;

// Conversions to and from the accumulation type. bfloat16 uses bit operations that vectorize (c10's conversion
// branches on NaN, which keeps GCC from vectorizing any loop that stores bfloat16); same rounding as c10.
template <typename S>
TORCHXC_ALWAYS_INLINE acc_t<S> load_acc(S v) {
  return static_cast<acc_t<S>>(v);
}
template <>
TORCHXC_ALWAYS_INLINE float load_acc(c10::BFloat16 v) {
  return __builtin_bit_cast(float, static_cast<uint32_t>(v.x) << 16);
}

template <typename S>
TORCHXC_ALWAYS_INLINE S store_acc(acc_t<S> v) {
  return static_cast<S>(v);
}
template <>
TORCHXC_ALWAYS_INLINE c10::BFloat16 store_acc(float v) {
  const uint32_t u = __builtin_bit_cast(uint32_t, v);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;  // round to nearest even
  return c10::BFloat16(static_cast<uint16_t>(v != v ? 0x7FC0u : rounded), c10::BFloat16::from_bits());
}

}  // namespace torchxc
