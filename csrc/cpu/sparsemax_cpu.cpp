// CPU kernels of the sparsemax family: sparsemax, sparsemax_backward, sparsemax_loss, sparsemax_loss_backward.
//
// Per row (d values): one vectorized pass for the maximum m, one for the candidates u = x - m > -1 (only they
// can be in the support, because tau >= max - 1), Newton/Michelot on the candidates (usually a handful of
// values), one vectorized pass writing max(u - t, 0). Rows run in parallel with at::parallel_for; a few very
// long rows split each pass across threads instead. Half and bfloat16 are computed in float.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "../common/sparsemax_common.h"
#include "convert.h"
#include "rows.h"
#include "simd.h"

namespace torchxc {
namespace {


// ---------------------------------------------------------------------------------------------------------
// Row primitives. Written once as inline templates; instantiated below as multiversioned overloads.

// Reductions keep kLanes independent accumulators (four AVX2 registers, two AVX-512 ones) so that the loop is
// limited by loads, not by the latency of a single accumulator chain. (Twice as many, with a second array of NaN
// flags, were spilled to the stack and zeroed by a rep stos per row in the AVX2 clone.)
template <typename T>
constexpr int kLanes = 128 / sizeof(T);

// acc <- v if v is larger or NaN: a NaN, once taken, stays (nothing compares above it and it is not replaced by
// a non-NaN), so the maximum of a row with a NaN is NaN without a separate flag array.
template <typename T>
TORCHXC_ALWAYS_INLINE T max_keep_nan(T acc, T v) {
  return (v > acc || v != v) ? v : acc;
}

template <typename S>
TORCHXC_ALWAYS_INLINE acc_t<S> row_max_impl(const S* x, int64_t n) {
  using T = acc_t<S>;
  constexpr int U = kLanes<T>;
  T acc[U];
  for (int i = 0; i < U; ++i) acc[i] = -std::numeric_limits<T>::infinity();
  int64_t j = 0;
  for (; j + U <= n; j += U) {
    TORCHXC_PRAGMA(omp simd)
    for (int i = 0; i < U; ++i) acc[i] = max_keep_nan(acc[i], load_acc(x[j + i]));
  }
  for (int64_t i = 0; j + i < n; ++i) acc[i] = max_keep_nan(acc[i], load_acc(x[j + i]));
  for (int w = U / 2; w >= 1; w /= 2) {  // tree: vectorized halvings instead of U scalar steps
    TORCHXC_PRAGMA(omp simd)
    for (int i = 0; i < w; ++i) acc[i] = max_keep_nan(acc[i], acc[i + w]);
  }
  return acc[0];
}

// Stores x - shift for every x with u = x - m > -1 at the front of `cand`; returns their number. (shift = m
// stores u itself; shift = 0 stores the values, for the long-row path that learns m later.) A vectorized compare
// builds a bit mask per block of 32 values and only the set bits are visited (typically a few per row).
template <typename S>
TORCHXC_ALWAYS_INLINE int64_t collect_impl(const S* x, int64_t n, acc_t<S> m, acc_t<S> shift, acc_t<S>* cand) {
  using T = acc_t<S>;
  int64_t k = 0;
  int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    uint32_t mask = 0;
    TORCHXC_PRAGMA(omp simd reduction(| : mask))
    for (int i = 0; i < 32; ++i) {
      mask |= static_cast<uint32_t>(load_acc(x[j + i]) - m > T(-1)) << i;
    }
    while (mask) {
      const int i = __builtin_ctz(mask);
      cand[k++] = load_acc(x[j + i]) - shift;
      mask &= mask - 1;
    }
  }
  for (; j < n; ++j) {
    const T v = load_acc(x[j]);
    if (v - m > T(-1)) cand[k++] = v - shift;
  }
  return k;
}

#if TORCHXC_HAVE_AVX512_COLLECT
// The same with AVX-512 compresses: no per-candidate work at all. Same arithmetic as collect_impl. The compress goes
// to a register and a masked store writes the kept lanes: the compress-store to memory (vcompressps m512) is
// microcoded on AMD Zen 4, where it made the float32 8192x128 forward 3.8x slower than the AVX2 rows (1.51 against
// 0.40 ms, 2-core VM). (The two forms were not compared on an Intel CPU.)
TORCHXC_AVX512 inline __m512 load16(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
TORCHXC_AVX512 inline __m512 load16(const c10::Half* p, __mmask16 k) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p));
}
TORCHXC_AVX512 inline __m512 load16(const c10::BFloat16* p, __mmask16 k) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(k, p)), 16));
}

template <typename S>
TORCHXC_AVX512 int64_t collect_avx512(const S* x, int64_t n, float m, float shift, float* cand) {
  const __m512 vm = _mm512_set1_ps(m), vs = _mm512_set1_ps(shift), minus_one = _mm512_set1_ps(-1.0f);
  int64_t k = 0;
  for (int64_t j = 0; j < n; j += 16) {
    const __mmask16 valid = n - j >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - j)) - 1);
    const __m512 v = load16(x + j, valid);
    const __mmask16 keep = _mm512_mask_cmp_ps_mask(valid, _mm512_sub_ps(v, vm), minus_one, _CMP_GT_OQ);
    const int kept = __builtin_popcount(keep);  // branchless: keep is unpredictable
    _mm512_mask_storeu_ps(cand + k, __mmask16((1u << kept) - 1), _mm512_maskz_compress_ps(keep, _mm512_sub_ps(v, vs)));
    k += kept;
  }
  return k;
}

TORCHXC_AVX512 int64_t collect_avx512(const double* x, int64_t n, double m, double shift, double* cand) {
  const __m512d vm = _mm512_set1_pd(m), vs = _mm512_set1_pd(shift), minus_one = _mm512_set1_pd(-1.0);
  int64_t k = 0;
  for (int64_t j = 0; j < n; j += 8) {
    const __mmask8 valid = n - j >= 8 ? __mmask8(0xFF) : __mmask8((1u << (n - j)) - 1);
    const __m512d v = _mm512_maskz_loadu_pd(valid, x + j);
    const __mmask8 keep = _mm512_mask_cmp_pd_mask(valid, _mm512_sub_pd(v, vm), minus_one, _CMP_GT_OQ);
    const int kept = __builtin_popcount(keep);
    _mm512_mask_storeu_pd(cand + k, __mmask8((1u << kept) - 1), _mm512_maskz_compress_pd(keep, _mm512_sub_pd(v, vs)));
    k += kept;
  }
  return k;
}

// Newton steps over at most 64 candidates held in eight registers of doubles (padded with -inf, which is
// never above a threshold): no memory traffic and no per-candidate branches.
constexpr int64_t kRegisterCandidates = 64;

struct RegisterCandidates {
  __m512d v[kRegisterCandidates / 8];
  int64_t nvec;

  TORCHXC_AVX512 SumCount<double> operator()(double t, bool /*shrink*/) const {
    const __m512d vt = _mm512_set1_pd(t);
    __m512d acc = _mm512_setzero_pd();
    int64_t count = 0;
    for (int64_t i = 0; i < nvec; ++i) {
      const __mmask8 k = _mm512_cmp_pd_mask(v[i], vt, _CMP_GT_OQ);
      acc = _mm512_mask_add_pd(acc, k, acc, _mm512_sub_pd(v[i], vt));
      count += __builtin_popcount(k);
    }
    return {_mm512_reduce_add_pd(acc), count};
  }
};

template <typename T>
TORCHXC_AVX512 double search_in_registers(const T* cand, int64_t n, int max_newton) {
  RegisterCandidates rc;
  rc.nvec = (n + 7) / 8;
  const __m512d neg_inf = _mm512_set1_pd(-std::numeric_limits<double>::infinity());
  for (int64_t i = 0; i < rc.nvec; ++i) {
    const int64_t left = n - 8 * i;
    const __mmask8 valid = left >= 8 ? __mmask8(0xFF) : __mmask8((1u << left) - 1);
    if constexpr (std::is_same_v<T, float>) {
      rc.v[i] = _mm512_mask_cvtps_pd(neg_inf, valid, _mm256_maskz_loadu_ps(valid, cand + 8 * i));
    } else {
      rc.v[i] = _mm512_mask_loadu_pd(neg_inf, valid, cand + 8 * i);
    }
  }
  return sparsemax_threshold<double>(rc, max_newton);
}

// TORCHXC_SPARSEMAX_NO_AVX512=1 keeps the AVX-512 collect and register search off (an AVX-512 machine then runs the
// AVX2 rows below, which tests compare with the portable ones).
const bool kCpuHasAVX512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vl") && !env_switch("TORCHXC_SPARSEMAX_NO_AVX512");

// ---- float32 / bfloat16 / float16 rows on AVX2 CPUs without AVX-512, and on AMD CPUs --------------------
// The row kernels written with AVX2 intrinsics: the maximum and a superset of the candidates in one pass (values
// within 1 of their lane's running maximum, stored by an emulated compress-store: a permutation looked up by the
// 8-bit compare mask, no branch per candidate), the candidates filtered against the row maximum, Newton steps
// over at most 32 of them held in eight registers of doubles, then the output pass; the backward's support sum
// and output pass. The same arithmetic as the portable primitives, which GCC compiled for AVX2 with spilled
// accumulators, scalar reduction tails and a call per Newton step; only the order of the sums differs.
// 8192x128 float32 on one core of the AMD EPYC (Zen 1) VM: forward 4.17 -> 3.2 ms, backward 2.69 -> 2.35 ms.
// AMD CPUs with AVX-512 run these rows too (the AVX-512 collection and register search still serve the long-row
// chunks and searches of 33-64 candidates): on a 2-core Zen 4 VM, forward+backward 1.50x / 1.36x faster than the
// AVX-512 rows (two passes: the maximum, then the collection) at float32 / bfloat16 8192x128 and 1.31x at bfloat16
// 4096x1024, level within noise at float32 4096x1024 and 256x32768 (alternating processes, five rounds). Intel CPUs
// with AVX-512 keep the AVX-512 rows, measured there in earlier sessions; the two were not compared on an Intel CPU.
// TORCHXC_SPARSEMAX_NO_AVX2=1 selects the AVX-512 rows where the CPU has AVX-512, else the portable primitives
// (tests compare each with the other paths).
#define TORCHXC_AVX2 __attribute__((target("avx2,fma,f16c")))
const bool kCpuAVX2Rows = (!kCpuHasAVX512 || __builtin_cpu_is("amd")) && __builtin_cpu_supports("avx2") &&
                          __builtin_cpu_supports("fma") && !env_switch("TORCHXC_SPARSEMAX_NO_AVX2");

// kCompress.idx[mask]: the lanes set in `mask`, in order, then zeros.
struct CompressTable {
  alignas(32) int32_t idx[256][8];
  CompressTable() {
    for (int mask = 0; mask < 256; ++mask) {
      int k = 0;
      for (int lane = 0; lane < 8; ++lane) {
        if (mask & (1 << lane)) idx[mask][k++] = lane;
      }
      while (k < 8) idx[mask][k++] = 0;
    }
  }
};
const CompressTable kCompress;

TORCHXC_AVX2 inline __m256i lanes_below(int64_t n) {  // lane i set iff i < n (n < 8)
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Eight values as float32: all eight (load8), or the first `left` < 8 with -inf after them (load_tail8;
// load_upto8 picks one of the two).
TORCHXC_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
TORCHXC_AVX2 inline __m256 load8(const c10::BFloat16* p) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
TORCHXC_AVX2 inline __m256 load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
template <typename S>
TORCHXC_AVX2 inline __m256 load_tail8(const S* p, int64_t left) {
  const __m256i mask = lanes_below(left);
  __m256 v;
  if constexpr (std::is_same_v<S, float>) {
    v = _mm256_maskload_ps(p, mask);
  } else {  // no masked 16-bit loads in AVX2: through a zeroed buffer
    S buf[8] = {};
    std::memcpy(buf, p, static_cast<size_t>(left) * sizeof(S));
    v = load8(buf);
  }
  return _mm256_blendv_ps(_mm256_set1_ps(-std::numeric_limits<float>::infinity()), v, _mm256_castsi256_ps(mask));
}
template <typename S>
TORCHXC_AVX2 inline __m256 load_upto8(const S* p, int64_t left) {
  return left >= 8 ? load8(p) : load_tail8(p, left);
}
// Sixteen values as two vectors of float32, in an order that only store16 has to undo: elements 0-7 and 8-15,
// except for bfloat16, where one load and two interleaves with zero (a bfloat16 is the high half of its float32)
// give elements 0-3 | 8-11 and 4-7 | 12-15 -- no widening loads and shifts. Elementwise work and sums over a row
// do not depend on the order.
template <typename S>
TORCHXC_AVX2 inline void load16(const S* p, __m256& a, __m256& b) {
  a = load8(p);
  b = load8(p + 8);
}
TORCHXC_AVX2 inline void load16(const c10::BFloat16* p, __m256& a, __m256& b) {
  const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), zero = _mm256_setzero_si256();
  a = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, v));
  b = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, v));
}

// Stores eight float32 values as S (round to nearest even, as store_acc): all eight (store8), sixteen in load16's
// order (store16: one pack and one 32-byte store for bfloat16), or the first `left` < 8 (store_tail8).
TORCHXC_AVX2 inline void store8(float* q, __m256 v) { _mm256_storeu_ps(q, v); }
TORCHXC_AVX2 inline void store8(c10::Half* q, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
// bfloat16 bits (round to nearest even, NaN -> 0x7FC0 as store_acc) of eight values, in 32-bit lanes.
TORCHXC_AVX2 inline __m256i bf16_bits(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  return _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}
TORCHXC_AVX2 inline void store8(c10::BFloat16* q, __m256 v) {
  const __m256i r = bf16_bits(v);
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);  // lanes 0-3, 4-7 first
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm256_castsi256_si128(packed));
}
template <typename S>
TORCHXC_AVX2 inline void store16(S* q, __m256 a, __m256 b) {
  store8(q, a);
  store8(q + 8, b);
}
TORCHXC_AVX2 inline void store16(c10::BFloat16* q, __m256 a, __m256 b) {
  // a holds elements 0-3 | 8-11 and b 4-7 | 12-15 (load16), so the in-lane pack puts them back in order
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), _mm256_packus_epi32(bf16_bits(a), bf16_bits(b)));
}
template <typename S>
TORCHXC_AVX2 inline void store_tail8(S* q, __m256 v, int64_t left) {
  if constexpr (std::is_same_v<S, float>) {
    _mm256_maskstore_ps(q, lanes_below(left), v);
  } else {
    S buf[8];
    store8(buf, v);
    std::memcpy(q, buf, static_cast<size_t>(left) * sizeof(S));
  }
}

// y = max((x - m) - t, 0) (write_impl's contract).
TORCHXC_AVX2 inline __m256 sparsemax_value8(__m256 x, __m256 m, __m256 t) {
  return _mm256_max_ps(_mm256_sub_ps(_mm256_sub_ps(x, m), t), _mm256_setzero_ps());
}

template <typename S>
TORCHXC_AVX2 void write_avx2(const S* x, S* y, int64_t n, float m, float t) {
  const __m256 vm = _mm256_set1_ps(m), vt = _mm256_set1_ps(t);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m256 a, b;
    load16(x + j, a, b);
    store16(y + j, sparsemax_value8(a, vm, vt), sparsemax_value8(b, vm, vt));
  }
  for (; j + 8 <= n; j += 8) store8(y + j, sparsemax_value8(load8(x + j), vm, vt));
  if (j < n) store_tail8(y + j, sparsemax_value8(load_tail8(x + j, n - j), vm, vt), n - j);
}

// out = g - mean where p > 0, 0 where p <= 0, NaN where p is NaN (backward_write_impl's contract).
TORCHXC_AVX2 inline __m256 backward_value8(__m256 p, __m256 g, __m256 mean) {
  const __m256 on = _mm256_and_ps(_mm256_cmp_ps(p, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_sub_ps(g, mean));
  return _mm256_blendv_ps(on, _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()),
                          _mm256_cmp_ps(p, p, _CMP_UNORD_Q));
}

template <typename S>
TORCHXC_AVX2 void backward_write_avx2(const S* p, const S* g, S* out, int64_t n, float mean) {
  const __m256 vmean = _mm256_set1_ps(mean);
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m256 pa, pb, ga, gb;
    load16(p + j, pa, pb);
    load16(g + j, ga, gb);
    store16(out + j, backward_value8(pa, ga, vmean), backward_value8(pb, gb, vmean));
  }
  for (; j + 8 <= n; j += 8) store8(out + j, backward_value8(load8(p + j), load8(g + j), vmean));
  if (j < n) store_tail8(out + j, backward_value8(load_tail8(p + j, n - j), load_tail8(g + j, n - j), vmean), n - j);
}

// Stores the lanes of v set in `keep` (an 8-bit mask) at dst, in order, with one permutation and one 8-lane
// store (dst has room for 8 values); returns how many.
TORCHXC_AVX2 inline int compress_store8(float* dst, __m256 v, int keep) {
  const __m256i perm = _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress.idx[keep]));
  _mm256_storeu_ps(dst, _mm256_permutevar8x32_ps(v, perm));
  return __builtin_popcount(keep);
}

// max_collect_avx2 on eight values: running maximum, NaN flags, and the values within 1 of the running maximum
// appended at cand + k; returns the new k.
TORCHXC_AVX2 inline int64_t max_collect_step(__m256 v, __m256& mx, __m256& nan, float* cand, int64_t k,
                                             __m256 minus_one) {
  mx = _mm256_max_ps(mx, v);
  nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return k + compress_store8(cand + k, v,
                             _mm256_movemask_ps(_mm256_cmp_ps(_mm256_sub_ps(v, mx), minus_one, _CMP_GT_OQ)));
}

// One pass over the row: its maximum (NaN if it holds a NaN) in *m_out, and at the front of cand (room for n + 8
// values) every x with x - mx > -1 for the running maximum mx of x's lane -- a superset of the candidates
// x - m > -1, because mx <= m and rounding is monotonic. Returns the superset's size.
template <typename S>
TORCHXC_AVX2 int64_t max_collect_avx2(const S* x, int64_t n, float* cand, float* m_out) {
  const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity()), minus_one = _mm256_set1_ps(-1.0f);
  __m256 mx = ninf, nan = _mm256_setzero_ps();
  int64_t k = 0, j = 0;
  for (; j + 16 <= n; j += 16) {
    __m256 a, b;
    load16(x + j, a, b);
    k = max_collect_step(a, mx, nan, cand, k, minus_one);
    k = max_collect_step(b, mx, nan, cand, k, minus_one);
  }
  for (; j < n; j += 8) {
    k = max_collect_step(load_upto8(x + j, n - j), mx, nan, cand, k, minus_one);  // padding -inf: never kept
  }
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
  *m_out = _mm256_movemask_ps(nan) ? std::numeric_limits<float>::quiet_NaN() : _mm_cvtss_f32(h);
  return k;
}

// Keeps u = v - m for the values v of cand[0, n) with u > -1 (in place, at the front); returns their number.
TORCHXC_AVX2 int64_t filter_candidates_avx2(float* cand, int64_t n, float m) {
  const __m256 vm = _mm256_set1_ps(m), minus_one = _mm256_set1_ps(-1.0f);
  int64_t k = 0;
  for (int64_t j = 0; j < n; j += 8) {  // k <= j: the store never overtakes an unread value
    const __m256 u = _mm256_sub_ps(_mm256_loadu_ps(cand + j), vm);
    const int valid = n - j >= 8 ? 0xFF : (1 << (n - j)) - 1;
    k += compress_store8(cand + k, u, _mm256_movemask_ps(_mm256_cmp_ps(u, minus_one, _CMP_GT_OQ)) & valid);
  }
  return k;
}

// Sum and count of g over p > 0 (support_sum_impl's contract; float sums in 16 lanes).
template <typename S>
TORCHXC_AVX2 SumCount<double> support_sum_avx2(const S* p, const S* g, int64_t n) {
  const __m256 zero = _mm256_setzero_ps();
  __m256 s0 = zero, s1 = zero;
  __m256i c0 = _mm256_setzero_si256(), c1 = _mm256_setzero_si256();
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    __m256 pa, pb, ga, gb;
    load16(p + j, pa, pb);
    load16(g + j, ga, gb);
    const __m256 in0 = _mm256_cmp_ps(pa, zero, _CMP_GT_OQ);
    const __m256 in1 = _mm256_cmp_ps(pb, zero, _CMP_GT_OQ);
    s0 = _mm256_add_ps(s0, _mm256_and_ps(in0, ga));
    s1 = _mm256_add_ps(s1, _mm256_and_ps(in1, gb));
    c0 = _mm256_sub_epi32(c0, _mm256_castps_si256(in0));  // a set lane is -1
    c1 = _mm256_sub_epi32(c1, _mm256_castps_si256(in1));
  }
  for (; j < n; j += 8) {  // padding lanes of p are -inf: outside the support
    const __m256 in0 = _mm256_cmp_ps(load_upto8(p + j, n - j), zero, _CMP_GT_OQ);
    s0 = _mm256_add_ps(s0, _mm256_and_ps(in0, load_upto8(g + j, n - j)));
    c0 = _mm256_sub_epi32(c0, _mm256_castps_si256(in0));
  }
  s0 = _mm256_add_ps(s0, s1);
  c0 = _mm256_add_epi32(c0, c1);
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s0), _mm256_extractf128_ps(s0, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  // the lanes' counts (each <= n / 16) are added in int64: a support of 2^31 values or more must not wrap
  alignas(32) uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), c0);
  int64_t count = 0;
  for (int i = 0; i < 8; ++i) count += lanes[i];
  return {static_cast<double>(_mm_cvtss_f32(h)), count};
}

constexpr int64_t kRegisterCandidatesAVX2 = 32;

struct RegisterCandidatesAVX2 {
  __m256d v[kRegisterCandidatesAVX2 / 4];
  int64_t nvec;

  TORCHXC_AVX2 SumCount<double> operator()(double t, bool /*shrink*/) const {
    const __m256d vt = _mm256_set1_pd(t);
    __m256d acc = _mm256_setzero_pd();
    int64_t count = 0;
    for (int64_t i = 0; i < nvec; ++i) {
      const __m256d above = _mm256_cmp_pd(v[i], vt, _CMP_GT_OQ);
      acc = _mm256_add_pd(acc, _mm256_and_pd(above, _mm256_sub_pd(v[i], vt)));
      count += __builtin_popcount(_mm256_movemask_pd(above));
    }
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(acc), _mm256_extractf128_pd(acc, 1));
    h = _mm_add_sd(h, _mm_unpackhi_pd(h, h));
    return {_mm_cvtsd_f64(h), count};
  }
};

// Row maximum and threshold of one float32, bfloat16 or float16 row (row_threshold's contract).
template <typename S>
TORCHXC_AVX2 bool row_threshold_avx2(const S* x, int64_t d, float* cand, int max_newton, float* m_out,
                                     float* t_out);
#endif

template <typename S>
TORCHXC_ALWAYS_INLINE void write_impl(const S* x, S* y, int64_t n, acc_t<S> m, acc_t<S> t) {
  using T = acc_t<S>;
  TORCHXC_PRAGMA(omp simd)
  for (int64_t j = 0; j < n; ++j) {
    const T p = (load_acc(x[j]) - m) - t;
    y[j] = store_acc<S>(p > T(0) ? p : T(0));
  }
}

// Sum and count of g over the support (p > 0). (Skipping the cache lines of g where p is zero was tried: the
// branch mispredicts cost more than the loads it saves, 3.3 -> 5.9 ms at 4096x1024.)
template <typename S>
TORCHXC_ALWAYS_INLINE SumCount<double> support_sum_impl(const S* p, const S* g, int64_t n) {
  using T = acc_t<S>;
  constexpr int U = kLanes<T>;
  using C = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;  // same width as T: vectorizes
  T s[U];
  C c[U];
  for (int i = 0; i < U; ++i) {
    s[i] = T(0);
    c[i] = 0;
  }
  int64_t j = 0;
  for (; j + U <= n; j += U) {
    TORCHXC_PRAGMA(omp simd)
    for (int i = 0; i < U; ++i) {
      const bool in = load_acc(p[j + i]) > T(0);
      const T gi = load_acc(g[j + i]);  // loaded unconditionally: a conditional load kept AVX2 builds scalar
      s[i] += in ? gi : T(0);
      c[i] += in;
    }
  }
  for (int64_t i = 0; j + i < n; ++i) {
    const bool in = load_acc(p[j + i]) > T(0);
    s[i] += in ? load_acc(g[j + i]) : T(0);
    c[i] += in;
  }
  for (int w = U / 2; w >= 1; w /= 2) {
    TORCHXC_PRAGMA(omp simd)
    for (int i = 0; i < w; ++i) s[i] += s[i + w];
  }
  int64_t count = 0;  // each lane's count is <= n / U; their sum in int64 (a support of 2^31 values must not wrap)
  for (int i = 0; i < U; ++i) count += static_cast<std::make_unsigned_t<C>>(c[i]);
  return {static_cast<double>(s[0]), count};
}

// g_in = g - mean on the support, 0 off it, NaN where the forward output was NaN.
template <typename S>
TORCHXC_ALWAYS_INLINE void backward_write_impl(const S* p, const S* g, S* out, int64_t n, acc_t<S> mean) {
  using T = acc_t<S>;
  const T nan = std::numeric_limits<T>::quiet_NaN();
  TORCHXC_PRAGMA(omp simd)
  for (int64_t j = 0; j < n; ++j) {
    // Unconditional loads and two selects, so that the loop vectorizes without masked loads (AVX2 builds
    // of the nested form were scalar, with a branch per value).
    const T pj = load_acc(p[j]);
    const T gj = load_acc(g[j]) - mean;
    const T on = pj > T(0) ? gj : T(0);
    const T v = pj != pj ? nan : on;
    out[j] = store_acc<S>(v);
  }
}

// sum_j 1/2 (p_j - q_j)^2 + q_j max(t - u_j, 0) with q = e_y: the sparsemax loss written as
// 1/2 ||p - q||^2 + sum_j q_j (tau - z_j)_+, which is non-negative term by term and shift invariant.
// Loss sums are accumulated in double: a row may have millions of classes.
template <typename S>
TORCHXC_ALWAYS_INLINE double loss_index_impl(const S* x, int64_t n, acc_t<S> m, acc_t<S> t, int64_t y) {
  using T = acc_t<S>;
  double sq = 0;
  TORCHXC_PRAGMA(omp simd reduction(+ : sq))
  for (int64_t j = 0; j < n; ++j) {
    T p = (load_acc(x[j]) - m) - t;
    p = p > T(0) ? p : T(0);
    const double dlt = static_cast<double>(p) - (j == y ? 1.0 : 0.0);
    sq += dlt * dlt;
  }
  const T gap = t - (load_acc(x[y]) - m);
  return 0.5 * sq + static_cast<double>(gap > T(0) ? gap : T(0));
}

// Sum of the label weights; `bad` counts negative, NaN or infinite weights.
template <typename S>
TORCHXC_ALWAYS_INLINE double target_mass_impl(const S* tg, int64_t n, int64_t* bad) {
  using T = acc_t<S>;
  double s = 0;
  int64_t b = 0;
  const T inf = std::numeric_limits<T>::infinity();
  TORCHXC_PRAGMA(omp simd reduction(+ : s, b))
  for (int64_t j = 0; j < n; ++j) {
    const T v = load_acc(tg[j]);
    s += static_cast<double>(v);
    b += !(v >= T(0) && v < inf);
  }
  *bad = b;
  return s;
}

template <typename S>
TORCHXC_ALWAYS_INLINE double loss_dense_impl(const S* x, const S* tg, int64_t n, acc_t<S> m, acc_t<S> t,
                                             acc_t<S> inv_mass) {
  using T = acc_t<S>;
  double acc = 0;
  TORCHXC_PRAGMA(omp simd reduction(+ : acc))
  for (int64_t j = 0; j < n; ++j) {
    const T u = load_acc(x[j]) - m;
    T p = u - t;
    p = p > T(0) ? p : T(0);
    const T q = load_acc(tg[j]) * inv_mass;
    const T dlt = p - q;
    const T gap = t - u;
    acc += static_cast<double>(T(0.5) * dlt * dlt + ((q > T(0) && gap > T(0)) ? q * gap : T(0)));  // q=0 skips -inf
  }
  return acc;
}

template <typename S>
TORCHXC_ALWAYS_INLINE void loss_grad_index_impl(const S* x, S* out, int64_t n, acc_t<S> m, acc_t<S> t, int64_t y,
                                                acc_t<S> scale) {
  using T = acc_t<S>;
  TORCHXC_PRAGMA(omp simd)
  for (int64_t j = 0; j < n; ++j) {
    T p = (load_acc(x[j]) - m) - t;
    p = (p > T(0) || p != p) ? p : T(0);  // a NaN row (NaN loss) gets NaN gradients
    out[j] = store_acc<S>(scale * (p - (j == y ? T(1) : T(0))));
  }
}

template <typename S>
TORCHXC_ALWAYS_INLINE void loss_grad_dense_impl(const S* x, const S* tg, S* out, int64_t n, acc_t<S> m,
                                                acc_t<S> t, acc_t<S> inv_mass, acc_t<S> scale) {
  using T = acc_t<S>;
  TORCHXC_PRAGMA(omp simd)
  for (int64_t j = 0; j < n; ++j) {
    T p = (load_acc(x[j]) - m) - t;
    p = (p > T(0) || p != p) ? p : T(0);
    out[j] = store_acc<S>(scale * (p - load_acc(tg[j]) * inv_mass));
  }
}

// f(t) = sum of (u - t) over the candidates u > t, and their count, in double precision.
template <typename T>
TORCHXC_ALWAYS_INLINE SumCount<double> candidate_sum_above_impl(const T* cand, int64_t n, double t) {
  double s = 0;
  int64_t k = 0;
  TORCHXC_PRAGMA(omp simd reduction(+ : s, k))
  for (int64_t i = 0; i < n; ++i) {
    const double u = static_cast<double>(cand[i]);
    const bool keep = u > t;
    s += keep ? u - t : 0.0;
    k += keep;
  }
  return {s, k};
}

TORCHXC_CPU_MULTIVERSION SumCount<double> candidate_sum_above(const float* cand, int64_t n, double t) {
  return candidate_sum_above_impl(cand, n, t);
}
TORCHXC_CPU_MULTIVERSION SumCount<double> candidate_sum_above(const double* cand, int64_t n, double t) {
  return candidate_sum_above_impl(cand, n, t);
}

#define TORCHXC_DEFINE_ROW_PRIMITIVES(S)                                                                         \
  TORCHXC_CPU_MULTIVERSION acc_t<S> row_max(const S* x, int64_t n) { return row_max_impl(x, n); }               \
  TORCHXC_CPU_MULTIVERSION int64_t collect_generic(const S* x, int64_t n, acc_t<S> m, acc_t<S> shift,           \
                                                    acc_t<S>* cand) {                                           \
    return collect_impl(x, n, m, shift, cand);                                                                  \
  }                                                                                                             \
  TORCHXC_CPU_MULTIVERSION void write(const S* x, S* y, int64_t n, acc_t<S> m, acc_t<S> t) {                   \
    write_impl(x, y, n, m, t);                                                                                  \
  }                                                                                                             \
  TORCHXC_CPU_MULTIVERSION SumCount<double> support_sum(const S* p, const S* g, int64_t n) {                   \
    return support_sum_impl(p, g, n);                                                                           \
  }                                                                                                             \
  TORCHXC_CPU_MULTIVERSION void backward_write(const S* p, const S* g, S* out, int64_t n, acc_t<S> mean) {     \
    backward_write_impl(p, g, out, n, mean);                                                                    \
  }                                                                                                             \
  TORCHXC_CPU_MULTIVERSION double loss_index(const S* x, int64_t n, acc_t<S> m, acc_t<S> t, int64_t y) {       \
    return loss_index_impl(x, n, m, t, y);                                                                      \
  }                                                                                                             \
  TORCHXC_CPU_MULTIVERSION double target_mass(const S* tg, int64_t n, int64_t* bad) {                          \
    return target_mass_impl(tg, n, bad);                                                                        \
  }                                                                                                             \
  TORCHXC_CPU_MULTIVERSION double loss_dense(const S* x, const S* tg, int64_t n, acc_t<S> m, acc_t<S> t,       \
                                             acc_t<S> inv_mass) {                                               \
    return loss_dense_impl(x, tg, n, m, t, inv_mass);                                                           \
  }                                                                                                             \
  TORCHXC_CPU_MULTIVERSION void loss_grad_index(const S* x, S* out, int64_t n, acc_t<S> m, acc_t<S> t,         \
                                                int64_t y, acc_t<S> scale) {                                    \
    loss_grad_index_impl(x, out, n, m, t, y, scale);                                                            \
  }                                                                                                             \
  TORCHXC_CPU_MULTIVERSION void loss_grad_dense(const S* x, const S* tg, S* out, int64_t n, acc_t<S> m,        \
                                                acc_t<S> t, acc_t<S> inv_mass, acc_t<S> scale) {                \
    loss_grad_dense_impl(x, tg, out, n, m, t, inv_mass, scale);                                                 \
  }

TORCHXC_DEFINE_ROW_PRIMITIVES(float)
TORCHXC_DEFINE_ROW_PRIMITIVES(double)
TORCHXC_DEFINE_ROW_PRIMITIVES(c10::Half)
TORCHXC_DEFINE_ROW_PRIMITIVES(c10::BFloat16)
#undef TORCHXC_DEFINE_ROW_PRIMITIVES

template <typename S>
int64_t collect(const S* x, int64_t n, acc_t<S> m, acc_t<S> shift, acc_t<S>* cand) {
#if TORCHXC_HAVE_AVX512_COLLECT
  if (kCpuHasAVX512) return collect_avx512(x, n, m, shift, cand);
#endif
  return collect_generic(x, n, m, shift, cand);
}

// The output pass and the backward's two passes over one whole row: the AVX2 row kernels where they run
// (kCpuAVX2Rows, not float64), else the multiversioned primitives. (The long-row path calls the primitives on
// its chunks directly.)
template <typename S>
void write_row(const S* x, S* y, int64_t n, acc_t<S> m, acc_t<S> t) {
#if TORCHXC_HAVE_AVX512_COLLECT
  if constexpr (!std::is_same_v<S, double>) {
    if (kCpuAVX2Rows) return write_avx2(x, y, n, m, t);
  }
#endif
  write(x, y, n, m, t);
}

template <typename S>
SumCount<double> support_sum_row(const S* p, const S* g, int64_t n) {
#if TORCHXC_HAVE_AVX512_COLLECT
  if constexpr (!std::is_same_v<S, double>) {
    if (kCpuAVX2Rows) return support_sum_avx2(p, g, n);
  }
#endif
  return support_sum(p, g, n);
}

template <typename S>
void backward_write_row(const S* p, const S* g, S* out, int64_t n, acc_t<S> mean) {
#if TORCHXC_HAVE_AVX512_COLLECT
  if constexpr (!std::is_same_v<S, double>) {
    if (kCpuAVX2Rows) return backward_write_avx2(p, g, out, n, mean);
  }
#endif
  backward_write(p, g, out, n, mean);
}

// Threshold t = tau - max over the candidates u in (-1, 0] (see sparsemax_threshold.h). Newton steps scan the
// candidates with vectorized double-precision sums; while many remain, they also compact the buffer so that
// later steps read fewer values.
constexpr int64_t kCompactAbove = 256;

template <typename T>
double search_candidates(T* cand, int64_t n, int max_newton) {
#if TORCHXC_HAVE_AVX512_COLLECT
  if (kCpuHasAVX512 && n <= kRegisterCandidates) return search_in_registers(cand, n, max_newton);
#endif
  auto sum_above = [&](double t, bool shrink) -> SumCount<double> {
    if (!(shrink && n > kCompactAbove)) return candidate_sum_above(cand, n, t);
    double s = 0;
    int64_t k = 0;
    for (int64_t i = 0; i < n; ++i) {
      const T u = cand[i];
      const bool keep = static_cast<double>(u) > t;
      cand[k] = u;
      k += keep;
      s += keep ? static_cast<double>(u) - t : 0.0;
    }
    n = k;
    return {s, k};
  };
  return sparsemax_threshold<double>(sum_above, max_newton);
}

#if TORCHXC_HAVE_AVX512_COLLECT
template <typename S>
TORCHXC_AVX2 bool row_threshold_avx2(const S* x, int64_t d, float* cand, int max_newton, float* m_out,
                                     float* t_out) {
  float m;
  const int64_t superset = max_collect_avx2(x, d, cand, &m);
  *m_out = m;
  if (!std::isfinite(m)) {
    *t_out = std::numeric_limits<float>::quiet_NaN();
    return false;
  }
  const int64_t n = filter_candidates_avx2(cand, superset, m);
  if (n > kRegisterCandidatesAVX2) {
    *t_out = static_cast<float>(search_candidates(cand, n, max_newton));
    return true;
  }
  RegisterCandidatesAVX2 rc;
  rc.nvec = (n + 3) / 4;
  const __m256d neg_inf = _mm256_set1_pd(-std::numeric_limits<double>::infinity());
  for (int64_t i = 0; i < rc.nvec; ++i) {
    const int64_t left = n - 4 * i;
    const __m128i mask = _mm_cmpgt_epi32(_mm_set1_epi32(static_cast<int>(left)), _mm_setr_epi32(0, 1, 2, 3));
    const __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(cand + 4 * i));  // cand has room for n + 8 values
    rc.v[i] = _mm256_blendv_pd(neg_inf, v, _mm256_castsi256_pd(_mm256_cvtepi32_epi64(mask)));
  }
  *t_out = static_cast<float>(sparsemax_threshold<double>(rc, max_newton));
  return true;
}
#endif


// Row maximum and threshold of one row; false when the maximum is not finite (the row's output is NaN).
// `cand` has room for d + 8 values (row_threshold_avx2 stores whole vectors).
template <typename S>
bool row_threshold(const S* x, int64_t d, acc_t<S>* cand, int max_newton, acc_t<S>* m_out, acc_t<S>* t_out) {
  using T = acc_t<S>;
#if TORCHXC_HAVE_AVX512_COLLECT
  if constexpr (!std::is_same_v<S, double>) {
    if (kCpuAVX2Rows) return row_threshold_avx2(x, d, cand, max_newton, m_out, t_out);
  }
#endif
  const T m = row_max(x, d);
  *m_out = m;
  if (!std::isfinite(m)) {
    *t_out = std::numeric_limits<T>::quiet_NaN();
    return false;
  }
  const int64_t n = collect(x, d, m, m, cand);
  *t_out = static_cast<T>(search_candidates(cand, n, max_newton));
  return true;
}

template <typename S>
void fill_nan(S* y, int64_t n) {
  std::fill(y, y + n, static_cast<S>(std::numeric_limits<float>::quiet_NaN()));
}

// Few rows, each long: the row is split into chunks processed by all threads (chunk order is fixed, so the
// result does not depend on the thread count). Pass 1 reads each chunk once, while it is in cache: its maximum
// mc, then its values with x - mc > -1 (a superset of the row's candidates, as mc <= m). The row maximum then
// filters those few values, and pass 2 writes the output.
template <typename S>
void sparsemax_long_row(const S* x, S* y, int64_t d, acc_t<S>* cand, int max_newton) {
  using T = acc_t<S>;
  const int64_t nchunks = num_chunks(d);
  auto len = [&](int64_t c) { return chunk_len(d, c); };
  std::vector<T> maxes(nchunks);
  std::vector<int64_t> counts(nchunks);
  at::parallel_for(0, nchunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) {
      const S* xc = x + c * kChunk;
      maxes[c] = row_max(xc, len(c));
      counts[c] = std::isfinite(maxes[c]) ? collect(xc, len(c), maxes[c], T(0), cand + c * kChunk) : 0;
    }
  });
  T m = -std::numeric_limits<T>::infinity();
  for (T v : maxes) m = (v != v || v > m) ? v : m;
  if (!std::isfinite(m)) {
    at::parallel_for(0, nchunks, 1, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) fill_nan(y + c * kChunk, len(c));
    });
    return;
  }
  int64_t n = 0;
  for (int64_t c = 0; c < nchunks; ++c) {
    const T* vals = cand + c * kChunk;
    for (int64_t i = 0; i < counts[c]; ++i) {  // n <= c * kChunk + i: never overwrites an unread value
      const T u = vals[i] - m;
      if (u > T(-1)) cand[n++] = u;
    }
  }
  const T t = static_cast<T>(search_candidates(cand, n, max_newton));
  at::parallel_for(0, nchunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) write(x + c * kChunk, y + c * kChunk, len(c), m, t);
  });
}

template <typename S>
void sparsemax_forward_kernel(const S* x, S* y, int64_t rows, int64_t d, int max_newton) {
  using T = acc_t<S>;
  if (use_long_row_path(rows, d)) {
    auto cand = scratch<T>(d + 8);
    for (int64_t r = 0; r < rows; ++r) sparsemax_long_row(x + r * d, y + r * d, d, cand.get(), max_newton);
    return;
  }
  at::parallel_for(0, rows, row_grain(d), [&](int64_t begin, int64_t end) {
    auto cand = scratch<T>(d + 8);
    for (int64_t r = begin; r < end; ++r) {
      const S* xr = x + r * d;
      S* yr = y + r * d;
      T m, t;
      if (row_threshold(xr, d, cand.get(), max_newton, &m, &t)) {
        write_row(xr, yr, d, m, t);
      } else {
        fill_nan(yr, d);
      }
    }
  });
}

template <typename S>
void sparsemax_backward_kernel(const S* g, const S* p, S* out, int64_t rows, int64_t d) {
  using T = acc_t<S>;
  if (use_long_row_path(rows, d)) {
    const int64_t nchunks = num_chunks(d);
    auto len = [&](int64_t c) { return chunk_len(d, c); };
    std::vector<SumCount<double>> partial(nchunks);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t off = r * d;
      at::parallel_for(0, nchunks, 1, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) {
          partial[c] = support_sum(p + off + c * kChunk, g + off + c * kChunk, len(c));
        }
      });
      double s = 0;
      int64_t k = 0;
      for (const auto& sc : partial) {
        s += sc.sum;
        k += sc.count;
      }
      const T mean = static_cast<T>(s / static_cast<double>(k));
      at::parallel_for(0, nchunks, 1, [&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) {
          const int64_t o = off + c * kChunk;
          backward_write(p + o, g + o, out + o, len(c), mean);
        }
      });
    }
    return;
  }
  at::parallel_for(0, rows, row_grain(d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t off = r * d;
      const SumCount<double> sc = support_sum_row(p + off, g + off, d);
      const T mean = static_cast<T>(sc.sum / static_cast<double>(sc.count));
      backward_write_row(p + off, g + off, out + off, d, mean);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------
// Op entry points

at::Tensor sparsemax_cpu(const at::Tensor& input, int64_t dim) {
  constexpr const char* op = "torchxc::sparsemax";
  check_float_input(input, op, "input");
  const RowLayout L = RowLayout::make(input, dim, op);
  at::Tensor out = at::empty({L.rows, L.d}, L.rows2d.options());
  if (L.rows > 0) {
    const int max_newton = sparsemax_max_newton();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "sparsemax_cpu", [&] {
      sparsemax_forward_kernel<scalar_t>(L.rows2d.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                                         L.rows, L.d, max_newton);
    });
  }
  return L.unflatten(out);
}

at::Tensor sparsemax_backward_cpu(const at::Tensor& grad_output, const at::Tensor& output, int64_t dim) {
  constexpr const char* op = "torchxc::sparsemax_backward";
  check_sparsemax_backward_inputs(grad_output, output, op);
  const RowLayout P = RowLayout::make(output, dim, op);
  const RowLayout G = RowLayout::make(grad_output, dim, op);
  at::Tensor out = at::empty({P.rows, P.d}, P.rows2d.options());
  if (P.rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), "sparsemax_backward_cpu", [&] {
      sparsemax_backward_kernel<scalar_t>(G.rows2d.const_data_ptr<scalar_t>(), P.rows2d.const_data_ptr<scalar_t>(),
                                          out.mutable_data_ptr<scalar_t>(), P.rows, P.d);
    });
  }
  return P.unflatten(out);
}

std::tuple<at::Tensor, at::Tensor> sparsemax_loss_cpu(const at::Tensor& input, const at::Tensor& target,
                                                       int64_t ignore_index) {
  constexpr const char* op = "torchxc::sparsemax_loss";
  SparsemaxLossProblem P = SparsemaxLossProblem::make(input, target, op);
  const bool index_target = P.index_target;
  const int64_t rows = P.rows, d = P.d;
  at::Tensor& loss = P.loss;
  at::Tensor& stats = P.stats;
  if (rows == 0) return {loss, stats};
  const at::Tensor& x = P.x;
  const at::Tensor& tg = P.target;
  const int max_newton = sparsemax_max_newton();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "sparsemax_loss_cpu", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* lp = loss.mutable_data_ptr<scalar_t>();
    T* sp = stats.mutable_data_ptr<T>();
    const int64_t* yp = index_target ? tg.const_data_ptr<int64_t>() : nullptr;
    const scalar_t* tp = index_target ? nullptr : tg.const_data_ptr<scalar_t>();
    at::parallel_for(0, rows, row_grain(d), [&](int64_t begin, int64_t end) {
      auto cand = scratch<T>(d + 8);
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* xr = xp + r * d;
        T mass;
        int64_t y = -1;
        if (index_target) {
          y = yp[r];
          TORCH_CHECK(y == ignore_index || (y >= 0 && y < d), op, ": target class index ", y,
                      " is out of range for ", d, " classes (ignore_index=", ignore_index, ")");
          mass = y == ignore_index ? T(0) : T(1);
        } else {
          int64_t bad = 0;
          const double mass_d = target_mass(tp + r * d, d, &bad);
          TORCH_CHECK(bad == 0, op, ": label-weight target must be finite and non-negative, but row ", r,
                      " has a negative, infinite or NaN entry");
          mass = static_cast<T>(mass_d);
          // the weights are divided by their sum in T: it and its reciprocal must be finite there
          TORCH_CHECK(mass == T(0) || (std::isfinite(mass) && std::isfinite(T(1) / mass)), op,
                      ": the label weights of row ", r, " sum to ", mass_d, ", which cannot be normalised in ",
                      input.scalar_type(), " (its reciprocal over- or underflows); rescale them, e.g. divide each "
                      "row by its sum");
        }
        T m, t;
        const bool finite = row_threshold(xr, d, cand.get(), max_newton, &m, &t);
        sp[3 * r] = m;
        sp[3 * r + 1] = t;
        sp[3 * r + 2] = mass;
        double l;
        if (mass == T(0)) {
          l = 0.0;  // no target: the row is ignored
        } else if (!finite) {
          l = std::numeric_limits<double>::quiet_NaN();
        } else if (index_target) {
          l = loss_index(xr, d, m, t, y);
        } else {
          l = loss_dense(xr, tp + r * d, d, m, t, T(1) / mass);
        }
        lp[r] = static_cast<scalar_t>(l);
      }
    });
  });
  return {loss, stats};
}

at::Tensor sparsemax_loss_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& input, const at::Tensor& target,
                                       const at::Tensor& stats) {
  constexpr const char* op = "torchxc::sparsemax_loss_backward";
  SparsemaxLossBackwardProblem P = SparsemaxLossBackwardProblem::make(grad_loss, input, target, stats, op);
  const bool index_target = P.index_target;
  const int64_t rows = P.rows, d = P.d;
  at::Tensor& grad = P.grad;
  if (rows == 0 || d == 0) return grad;
  const at::Tensor &x = P.x, &tg = P.target, &st = P.stats, &gl = P.grad_loss;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "sparsemax_loss_backward_cpu", [&] {
    using T = acc_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const T* sp = st.const_data_ptr<T>();
    const T* glp = gl.const_data_ptr<T>();
    scalar_t* op_ = grad.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, row_grain(d), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T m = sp[3 * r], t = sp[3 * r + 1], mass = sp[3 * r + 2];
        scalar_t* out = op_ + r * d;
        if (mass == T(0)) {  // ignored row (zero target mass)
          std::fill(out, out + d, scalar_t(0));
        } else if (index_target) {
          const int64_t y = tg.const_data_ptr<int64_t>()[r];  // as the forward checked it (a labelled row)
          TORCH_CHECK(y >= 0 && y < d, "torchxc::sparsemax_loss_backward: class index ", y, " of row ", r,
                      " is out of range for ", d, " classes");
          loss_grad_index(xp + r * d, out, d, m, t, y, glp[r]);
        } else {
          loss_grad_dense(xp + r * d, tg.const_data_ptr<scalar_t>() + r * d, out, d, m, t, T(1) / mass, glp[r]);
        }
      }
    });
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(torchxc, CPU, m) {
  m.impl("sparsemax", &sparsemax_cpu);
  m.impl("sparsemax_backward", &sparsemax_backward_cpu);
  m.impl("sparsemax_loss", &sparsemax_loss_cpu);
  m.impl("sparsemax_loss_backward", &sparsemax_loss_backward_cpu);
}

}  // namespace torchxc
