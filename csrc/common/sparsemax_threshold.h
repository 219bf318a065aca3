// Exact sparsemax threshold search, shared by the CPU and CUDA kernels.
//
// Math (Martins & Astudillo 2016): sparsemax(z) = max(z - tau, 0) where tau solves
//   f(tau) = sum_j max(z_j - tau, 0) = 1.
// All kernels work in coordinates relative to the row maximum, u_j = z_j - max(z) <= 0, so that the
// threshold t = tau - max(z) lies in [-1, 0) whatever the magnitude of z (no cancellation for |z| ~ 1e30).
//
// f is convex, decreasing and piecewise linear. Newton's method started left of the root (t = -1, where
// f(-1) >= 1 because the maximum alone contributes 1) is Michelot's algorithm: each step
//   t <- t + (f(t) - 1) / #{u > t}  =  (sum_{u > t} u - 1) / #{u > t}
// never overshoots, only shrinks the candidate set, and stops exactly when the set stops changing: then the
// set *is* the support and t the exact threshold. It usually needs 2-6 steps. Its worst case is one element
// per step, so after `max_newton` steps we switch to a bisection over the ordered bit patterns of the
// floating-point values in (t, 0]: at most 32 (float) or 64 (double) steps, which end on two adjacent
// representable numbers lo < hi with f(lo) >= 1 > f(hi); the support is then exactly {u > lo}.
#pragma once

#include <c10/macros/Macros.h>
#include <cstdint>
#include <cstring>

namespace torchxc {

template <typename acc_t>
struct SumCount {
  acc_t sum;
  int64_t count;
};

namespace detail {

template <typename acc_t>
struct OrderedBits;

template <>
struct OrderedBits<float> {
  using type = uint32_t;
  static constexpr type kSign = 0x80000000u;
};

template <>
struct OrderedBits<double> {
  using type = uint64_t;
  static constexpr type kSign = 0x8000000000000000ull;
};

// Maps a float to an unsigned integer with the same order (for non-NaN values).
template <typename acc_t>
C10_HOST_DEVICE inline typename OrderedBits<acc_t>::type to_ordered(acc_t x) {
  using key_t = typename OrderedBits<acc_t>::type;
  key_t bits;
  memcpy(&bits, &x, sizeof(bits));
  return (bits & OrderedBits<acc_t>::kSign) ? ~bits : (bits | OrderedBits<acc_t>::kSign);
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t from_ordered(typename OrderedBits<acc_t>::type key) {
  using key_t = typename OrderedBits<acc_t>::type;
  key_t bits = (key & OrderedBits<acc_t>::kSign) ? (key ^ OrderedBits<acc_t>::kSign) : ~key;
  acc_t x;
  memcpy(&x, &bits, sizeof(bits));
  return x;
}

}  // namespace detail

// Returns t = tau - max(z). `sum_above(t, shrink)` must return, over the row's shifted values u > t, the sum of
// (u - t) -- that is f(t) -- and their count (the row must contain u = 0, its maximum). Summing u - t rather
// than u keeps the Newton step well conditioned: the terms are non-negative and add up to about 1.
// Every call site calls it with the same t on all threads of a row, so device implementations may use
// collective reductions inside. `shrink == true` means t will never decrease again, so an implementation may drop
// the values <= t for good (the CPU kernel compacts its candidate buffer).
template <typename acc_t, typename SumAbove>
C10_HOST_DEVICE inline acc_t sparsemax_threshold(SumAbove&& sum_above, int max_newton) {
  acc_t t = acc_t(-1);
  SumCount<acc_t> sc = sum_above(t, true);
  for (int it = 0; it < max_newton; ++it) {
    const acc_t tn = t + (sc.sum - acc_t(1)) / acc_t(sc.count);
    if (!(tn > t)) {
      return tn;  // f(t) == 1: t's set is already the support
    }
    const SumCount<acc_t> next = sum_above(tn, true);
    if (next.count == sc.count) {
      // The set above tn is the set tn was computed from, so tn is the threshold; the sum at tn (the support's
      // values, which add up to about 1) gives it again without the cancellation of sc's terms u - t, which at
      // t = -1 each hold about 1 (a near-uniform row of a million entries: a relative error of 4e-8 in float64
      // from that sum alone, 1e-15 from this one). Same set, so no further step can move it.
      return tn + (next.sum - acc_t(1)) / acc_t(next.count);
    }
    t = tn;
    sc = next;
  }
  // Bisection on representable values in (t, 0]: f(lo) >= 1 holds at lo = t, f(0) = 0 < 1.
  using key_t = typename detail::OrderedBits<acc_t>::type;
  key_t lo = detail::to_ordered(t);
  key_t hi = detail::to_ordered(acc_t(0));
  while (hi - lo > 1) {
    const key_t mid = lo + (hi - lo) / 2;
    const acc_t v = detail::from_ordered<acc_t>(mid);
    const SumCount<acc_t> m = sum_above(v, false);
    if (m.sum >= acc_t(1)) {
      lo = mid;
      t = v;
      sc = m;
    } else {
      hi = mid;
    }
  }
  return t + (sc.sum - acc_t(1)) / acc_t(sc.count);
}

// Steps of Newton before the bisection fallback. Typical rows need fewer than 8.
constexpr int kSparsemaxMaxNewton = 24;

}  // namespace torchxc
