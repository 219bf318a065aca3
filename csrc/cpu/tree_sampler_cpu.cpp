// CPU kernels of the adversarial tree sampler (tree definition in csrc/common/tree_common.h): sampling, log q of
// given labels and its backward. Examples run in parallel; a draw costs D dot products of length k.
//
// Sampling in float32 walks a block of draws level by level (structure of arrays): the dot products of all the
// block's walks at one level are independent, so their node loads overlap instead of each walk waiting on its
// own chain of cache misses, and the branch decisions, random numbers and probabilities are vectorized loops
// (AVX2 where the CPU has it: dot products eight walks at a time, Philox on eight counters per vector; AVX-512:
// sixteen of each).
// The upper levels, where a block's rows have fewer nodes than the block has walks (levels below log2(S / 2) for
// S draws per row), compute each (row, node) logit once and let the walks look it up.
// The probability of the path is kept as the sum of the logs of the branch numerators (0 or -|logit|) and the float
// product of the denominators, with no division or logarithm per level and one logarithm per draw at the end.
// float64 (and float32 trees deeper than 30 levels) use the scalar walk of tree_common.h. Both draw level l with
// the same uniform (tree_level_bits of Philox block (sample, row, l / 8)), so their draws differ only where a uniform
// falls within rounding of a branch probability.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

#include "../common/tree_common.h"
#include "simd.h"
#include "vec_math.h"

namespace torchxc {
namespace {

constexpr int64_t kWalkBlock = 512;  // draws walked together by one thread

// One level of one walk: branch on the logit x with the walk's uniform u, add the log of the branch taken to the
// path's log probability, step to the child. empty: the right child holds only padding, the walk goes left with
// probability 1. With a = e^-|x|, the branches have probabilities 1 / (1 + a) and a / (1 + a): the walk adds log a =
// -|x| to lognum when it takes the a branch and multiplies den (in [1, 2^depth)) by 1 + a, so a level needs no
// division and no logarithm: the a branch is taken iff u < a / (1 + a), i.e. u (1 + a) < a (tree_take_unlikely in
// tree_common.h), and log q = lognum - log(den) at the end. refine: a / (1 + a) lies inside u's 2^-16 interval, so
// u's first 16 bits (u16, from tree_level_bits) cannot decide (undecided()); the walk went the a way and
// refine_block() settles it with more bits.
TORCHXC_ALWAYS_INLINE bool undecided(float uu, float one_a, float a) {
  return (uu * one_a < a) & ((uu + 1.0f / 65536.0f) * one_a > a);
}

TORCHXC_ALWAYS_INLINE float uniform16(uint32_t u16) { return static_cast<float>(u16) * (1.0f / 65536.0f); }

TORCHXC_ALWAYS_INLINE void tree_step(float x, uint32_t u16, bool empty, int32_t& node, float& lognum, float& den,
                                     int32_t& refine) {  // refine: |= (one vector OR per level, no store per walk)
  const bool pos = x >= 0.0f;
  const float nabs = -std::fabs(x);
  const float a = vexp_nonpos(nabs);
  const float one_a = 1.0f + a;
  const float uu = uniform16(u16);
  const bool unlikely = (uu * one_a < a) & !empty;  // a NaN logit: false, and den becomes NaN
  refine |= static_cast<int32_t>(undecided(uu, one_a, a) & !empty);
  const bool right = (unlikely != pos) & !empty;
  lognum += bsel(unlikely, nabs, 0.0f);
  den *= bsel(empty, 1.0f, one_a);
  node = 2 * node + 1 + static_cast<int32_t>(right);
}

// After a level where some tree_step asked to refine (probability 2^-16 per walk): finds those walks again (the
// same test, in a vector pass; the empty ones never ask) and decides with tree_take_unlikely, as the scalar walk
// does; if the walk should not have taken the a branch, it takes the likely one instead. Compiled in the same ISA
// clones as the walk loop, so that its e^-|x| (FMA contraction included) is the one the walk's test used.
TORCHXC_CPU_MULTIVERSION void refine_block(const float* logit, const uint32_t* u32, const uint32_t* smp,
                                           const uint32_t* row, const uint32_t* hi, uint64_t seed, int64_t level,
                                           int32_t empty_from, int64_t n, int32_t* node, float* lognum) {
  alignas(64) int32_t ask[kWalkBlock];
  TORCHXC_PRAGMA(omp simd)
  for (int64_t i = 0; i < n; ++i) {
    const float nabs = -std::fabs(logit[i]);
    const float a = vexp_nonpos(nabs), one_a = 1.0f + a;
    ask[i] = static_cast<int32_t>(((node[i] - 1) / 2 < empty_from) &
                                  undecided(uniform16(tree_level_bits(u32[i], level)), one_a, a));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (!ask[i]) continue;
    const float nabs = -std::fabs(logit[i]);
    const float a = vexp_nonpos(nabs), one_a = 1.0f + a;
    if (tree_take_unlikely(a / one_a, tree_level_bits(u32[i], level), seed, smp[i], row[i], hi[i], level)) continue;
    const bool pos = logit[i] >= 0.0f;  // the likely branch: right iff pos (tree_step went the other way)
    node[i] += pos ? 1 : -1;
    lognum[i] -= nabs;
  }
}

// logit[i] = weight[node[i]] . z[zrow[i]] + bias[node[i]] for n (node, row) pairs. Every logit is summed in the
// same order whichever position it has in the list, so a logit computed once for a row and shared by its draws
// (tree_sample_block_f32's upper levels) equals the one a walk would have computed itself.
//
// x86 with AVX2+FMA: eight pairs at a time, each an 8-lane partial sum over k (masked tail), reduced together by a
// transposing horizontal add, so one reduction serves eight dot products; with AVX-512 and k > 8, sixteen at a time
// (below). Elsewhere: a scalar loop.
#if TORCHXC_HAVE_AVX512_COLLECT
// TORCHXC_TREE_NO_AVX2=1 selects the portable loops on an AVX2 machine too (tests compare the two).
const bool kTreeAVX2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                       !env_switch("TORCHXC_TREE_NO_AVX2");

// kChunks: k / 8 when the caller knows it at compile time (unrolled, no tail), else -1.
template <int kChunks>
__attribute__((target("avx2,fma"))) inline __m256 tree_partial_dot_avx2(const float* w, const float* zr, int64_t full,
                                                                        int64_t tail, __m256i tail_mask) {
  __m256 acc = _mm256_setzero_ps();
  if constexpr (kChunks >= 0) {
    for (int j = 0; j < 8 * kChunks; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(zr + j), acc);
  } else {
    for (int64_t j = 0; j < full; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(w + j), _mm256_loadu_ps(zr + j), acc);
    if (tail) {
      acc = _mm256_fmadd_ps(_mm256_maskload_ps(w + full, tail_mask), _mm256_maskload_ps(zr + full, tail_mask), acc);
    }
  }
  return acc;
}

// Lane t: ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)) of a[t].
__attribute__((target("avx2,fma"))) inline __m256 transpose_sum8(const __m256* a) {
  const __m256 s01 = _mm256_hadd_ps(a[0], a[1]), s23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 s45 = _mm256_hadd_ps(a[4], a[5]), s67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

template <int kChunks>
__attribute__((target("avx2,fma"))) void tree_logits_avx2(const float* z, const float* weight, const float* bias,
                                                          int64_t k, const int32_t* node, const int64_t* zrow,
                                                          int64_t n, float* logit) {
  if constexpr (kChunks >= 0) k = 8 * kChunks;  // a constant for the index arithmetic
  const int64_t tail = k % 8, full = k - tail;
  const __m256i tail_mask =
      _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(tail)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  int64_t i0 = 0;
  for (; i0 + 8 <= n; i0 += 8) {
    __m256 a[8];
    for (int t = 0; t < 8; ++t) {
      a[t] = tree_partial_dot_avx2<kChunks>(weight + node[i0 + t] * k, z + zrow[i0 + t] * k, full, tail, tail_mask);
    }
    _mm256_storeu_ps(logit + i0, transpose_sum8(a));  // AVX2 gathers are slow on some CPUs: scalar bias loads
    for (int t = 0; t < 8; ++t) logit[i0 + t] += bias[node[i0 + t]];
  }
  if (i0 < n) {  // the last pairs, padded by repeating the last one
    __m256 a[8];
    for (int t = 0; t < 8; ++t) {
      const int64_t i = std::min<int64_t>(i0 + t, n - 1);
      a[t] = tree_partial_dot_avx2<kChunks>(weight + node[i] * k, z + zrow[i] * k, full, tail, tail_mask);
    }
    alignas(32) float out[8];
    _mm256_store_ps(out, transpose_sum8(a));
    for (int64_t i = i0; i < n; ++i) logit[i] = out[i - i0] + bias[node[i]];
  }
}

// AVX-512 (k > 8): sixteen pairs at a time, each a 16-lane partial sum over k (masked tail), reduced together by a
// transposing add tree (unpack, then 128-bit block shuffles), so one reduction serves sixteen dot products and a
// k = 16 dot product is one multiply. TORCHXC_TREE_NO_AVX512=1 keeps the AVX2 loops (tests compare the two).
const bool kTreeAVX512 = kTreeAVX2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vl") && !env_switch("TORCHXC_TREE_NO_AVX512");

// kChunks: k / 16 when the caller knows it at compile time (unrolled, no tail), else -1.
template <int kChunks>
TORCHXC_AVX512 inline __m512 tree_partial_dot_avx512(const float* w, const float* zr, int64_t full, __mmask16 tail) {
  __m512 acc = _mm512_setzero_ps();
  if constexpr (kChunks >= 0) {
    for (int j = 0; j < 16 * kChunks; j += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + j), _mm512_loadu_ps(zr + j), acc);
  } else {
    for (int64_t j = 0; j < full; j += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + j), _mm512_loadu_ps(zr + j), acc);
    if (tail) {
      acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w + full), _mm512_maskz_loadu_ps(tail, zr + full), acc);
    }
  }
  return acc;
}

// Lane t: the sum of the 16 lanes of a[t], in the same order for every t: within each 128-bit block
// (e0 + e2) + (e1 + e3), then the blocks (q0 + q1) + (q2 + q3).
TORCHXC_AVX512 inline __m512 transpose_sum16(const __m512* a) {
  __m512 s1[8], s2[4], s3[2];
  for (int i = 0; i < 8; ++i) {
    s1[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  }
  for (int i = 0; i < 4; ++i) {  // block q of s2[i]: the block-q sums of a[4i .. 4i+3]
    const __m512d x = _mm512_castps_pd(s1[2 * i]), y = _mm512_castps_pd(s1[2 * i + 1]);
    s2[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  for (int i = 0; i < 2; ++i) {  // blocks: s2[2i] (q0 + q1), s2[2i] (q2 + q3), s2[2i+1] (q0 + q1), s2[2i+1] (q2 + q3)
    s3[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s2[2 * i], s2[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                          _mm512_shuffle_f32x4(s2[2 * i], s2[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  }
  return _mm512_add_ps(_mm512_shuffle_f32x4(s3[0], s3[1], _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(s3[0], s3[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

template <int kChunks>
TORCHXC_AVX512 void tree_logits_avx512(const float* z, const float* weight, const float* bias, int64_t k,
                                       const int32_t* node, const int64_t* zrow, int64_t n, float* logit) {
  if constexpr (kChunks >= 0) k = 16 * kChunks;
  const int64_t full = k - k % 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (k % 16)) - 1u);
  int64_t i0 = 0;
  for (; i0 + 16 <= n; i0 += 16) {
    __m512 a[16];
    for (int t = 0; t < 16; ++t) {
      a[t] = tree_partial_dot_avx512<kChunks>(weight + node[i0 + t] * k, z + zrow[i0 + t] * k, full, tail);
    }
    const __m512i idx = _mm512_loadu_si512(reinterpret_cast<const void*>(node + i0));
    _mm512_storeu_ps(logit + i0, _mm512_add_ps(transpose_sum16(a), _mm512_i32gather_ps(idx, bias, 4)));
  }
  if (i0 < n) {  // the last pairs, padded by repeating the last one
    __m512 a[16];
    for (int t = 0; t < 16; ++t) {
      const int64_t i = std::min<int64_t>(i0 + t, n - 1);
      a[t] = tree_partial_dot_avx512<kChunks>(weight + node[i] * k, z + zrow[i] * k, full, tail);
    }
    alignas(64) float out[16];
    _mm512_store_ps(out, transpose_sum16(a));
    for (int64_t i = i0; i < n; ++i) logit[i] = out[i - i0] + bias[node[i]];
  }
}
#endif

void tree_logits(const float* z, const float* weight, const float* bias, int64_t k, const int32_t* node,
                 const int64_t* zrow, int64_t n, float* logit) {
#if TORCHXC_HAVE_AVX512_COLLECT
  if (kTreeAVX512 && k > 8) {
    switch (k) {
      case 16: return tree_logits_avx512<1>(z, weight, bias, k, node, zrow, n, logit);
      case 32: return tree_logits_avx512<2>(z, weight, bias, k, node, zrow, n, logit);
      default: return tree_logits_avx512<-1>(z, weight, bias, k, node, zrow, n, logit);
    }
  }
  if (kTreeAVX2) {
    switch (k) {
      case 8: return tree_logits_avx2<1>(z, weight, bias, k, node, zrow, n, logit);
      case 16: return tree_logits_avx2<2>(z, weight, bias, k, node, zrow, n, logit);
      case 32: return tree_logits_avx2<4>(z, weight, bias, k, node, zrow, n, logit);
      default: return tree_logits_avx2<-1>(z, weight, bias, k, node, zrow, n, logit);
    }
  }
#endif
  for (int64_t i = 0; i < n; ++i) {
    const float* w = weight + node[i] * k;
    const float* zr = z + zrow[i] * k;
    float acc = 0.0f;
    for (int64_t j = 0; j < k; ++j) acc += w[j] * zr[j];
    logit[i] = acc + bias[node[i]];
  }
}

// rnd[w][i] = word w of philox4x32(seed, smp[i], row[i], ctr, hi[i]) for i < n. AVX2: eight counters per vector,
// each 32x32->64-bit product split into its halves with even/odd-lane multiplies and blends (compilers vectorize
// the scalar form through 64-bit lanes at about a sixth of this speed).
#if TORCHXC_HAVE_AVX512_COLLECT
__attribute__((target("avx2"))) inline void philox_mulhilo8(__m256i x, __m256i m, __m256i* hi, __m256i* lo) {
  const __m256i even = _mm256_mul_epu32(x, m), odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m);
  *lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

// Fills rnd[w][at + i] for the first n - n % 8 counters i of smp, row, hi (at: where they start in the block);
// returns how many.
__attribute__((target("avx2"))) int64_t philox_block_avx2(uint64_t seed, const uint32_t* smp, const uint32_t* row,
                                                          uint32_t ctr, const uint32_t* hi, int64_t n,
                                                          uint32_t (*rnd)[kWalkBlock], int64_t at) {
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(0xCD9E8D57u));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(smp + i));
    __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i));
    __m256i x2 = _mm256_set1_epi32(static_cast<int>(ctr));
    __m256i x3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(hi + i));
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      __m256i hi0, lo0, hi1, lo1;
      philox_mulhilo8(x0, m0, &hi0, &lo0);
      philox_mulhilo8(x2, m1, &hi1, &lo1);
      x0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), _mm256_set1_epi32(static_cast<int>(k0)));
      x1 = lo1;
      x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), _mm256_set1_epi32(static_cast<int>(k1)));
      x3 = lo0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(rnd[0] + at + i), x0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(rnd[1] + at + i), x1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(rnd[2] + at + i), x2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(rnd[3] + at + i), x3);
  }
  return i;
}

// The same with sixteen counters per vector (AVX-512); fills the first n - n % 16 counters. Shuffles instead of
// shifts (Intel runs 512-bit shifts on port 0, with the multiplies): the odd lanes move down by vpshufd, two-source
// permutes recombine the products' halves, vpternlogd makes the three-way xors (+1-3% draws/s on the Xeon VM).
TORCHXC_AVX512 inline void philox_mulhilo16(__m512i x, __m512i m, __m512i* hi, __m512i* lo) {
  const __m512i even = _mm512_mul_epu32(x, m), odd = _mm512_mul_epu32(_mm512_shuffle_epi32(x, _MM_PERM_CDAB), m);
  const __m512i lo_idx = _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
  const __m512i hi_idx = _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  *lo = _mm512_permutex2var_epi32(even, lo_idx, odd);
  *hi = _mm512_permutex2var_epi32(even, hi_idx, odd);
}

TORCHXC_AVX512 int64_t philox_block_avx512(uint64_t seed, const uint32_t* smp, const uint32_t* row, uint32_t ctr,
                                           const uint32_t* hi, int64_t n, uint32_t (*rnd)[kWalkBlock]) {
  const __m512i m0 = _mm512_set1_epi32(static_cast<int>(0xD2511F53u));
  const __m512i m1 = _mm512_set1_epi32(static_cast<int>(0xCD9E8D57u));
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m512i x0 = _mm512_loadu_si512(reinterpret_cast<const void*>(smp + i));
    __m512i x1 = _mm512_loadu_si512(reinterpret_cast<const void*>(row + i));
    __m512i x2 = _mm512_set1_epi32(static_cast<int>(ctr));
    __m512i x3 = _mm512_loadu_si512(reinterpret_cast<const void*>(hi + i));
    uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
    for (int round = 0; round < 10; ++round) {
      __m512i hi0, lo0, hi1, lo1;
      philox_mulhilo16(x0, m0, &hi0, &lo0);
      philox_mulhilo16(x2, m1, &hi1, &lo1);
      x0 = _mm512_ternarylogic_epi32(hi1, x1, _mm512_set1_epi32(static_cast<int>(k0)), 0x96);
      x1 = lo1;
      x2 = _mm512_ternarylogic_epi32(hi0, x3, _mm512_set1_epi32(static_cast<int>(k1)), 0x96);
      x3 = lo0;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    _mm512_storeu_si512(reinterpret_cast<void*>(rnd[0] + i), x0);
    _mm512_storeu_si512(reinterpret_cast<void*>(rnd[1] + i), x1);
    _mm512_storeu_si512(reinterpret_cast<void*>(rnd[2] + i), x2);
    _mm512_storeu_si512(reinterpret_cast<void*>(rnd[3] + i), x3);
  }
  return i;
}
#endif

void philox_block(uint64_t seed, const uint32_t* smp, const uint32_t* row, uint32_t ctr, const uint32_t* hi,
                  int64_t n, uint32_t (*rnd)[kWalkBlock]) {
  int64_t i = 0;
#if TORCHXC_HAVE_AVX512_COLLECT
  if (kTreeAVX512) i = philox_block_avx512(seed, smp, row, ctr, hi, n, rnd);
  if (kTreeAVX2) i += philox_block_avx2(seed, smp + i, row + i, ctr, hi + i, n - i, rnd, i);
#endif
  for (; i < n; ++i) {
    const Philox4x32 r = philox4x32(seed, smp[i], row[i], ctr, hi[i]);
    for (int w = 0; w < 4; ++w) rnd[w][i] = r.v[w];
  }
}

TORCHXC_ALWAYS_INLINE float two_atanh_small(float t) {  // 2 atanh(t) for |t| <= 0.1716
  const float t2 = t * t;
  const float series = 1.0f + t2 * (1.0f / 3 + t2 * (1.0f / 5 + t2 * (1.0f / 7 + t2 * (1.0f / 9 + t2 * (1.0f / 11)))));
  return 2.0f * t * series;
}

// log(m) for m in [1, 2), vectorizable: with m = 2^e * y, y in [sqrt(1/2), sqrt(2)), log(y) = 2 atanh(t) for
// t = (y - 1) / (y + 1), |t| < 0.1716, whose odd series to t^11 truncates at a relative 5e-11: the float
// rounding of t and the sums (a few ulp) is what remains.
TORCHXC_ALWAYS_INLINE float log_1_2(float m) {
  constexpr float kSqrt2 = 1.41421356237f, kLn2 = 0.693147180559945309f;
  const bool high = m >= kSqrt2;
  const float y = bsel(high, 0.5f * m, m);
  return two_atanh_small((y - 1.0f) / (y + 1.0f)) + bsel(high, kLn2, 0.0f);
}

// The size of one core's L2 cache (the sysconf of glibc; elsewhere 256 KiB).
int64_t l2_cache_bytes() {
#if defined(_SC_LEVEL2_CACHE_SIZE)
  const long bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
  if (bytes > 0) return bytes;
#endif
  return int64_t(1) << 18;
}
const int64_t kL2CacheBytes = l2_cache_bytes();

// The fast path's node numbers are int32: trees of depth <= 30 (a billion labels). Deeper trees use tree_draw.
constexpr int64_t kMaxBlockDepth = 30;

// Draws i0 .. i0+n-1 of the flat [B, S] output (n <= kWalkBlock), float32, depth <= kMaxBlockDepth. The loops over
// the block's walks are 8 lanes wide on AVX2 (float and int32 state only). The path probability is kept as a
// log numerator and a float denominator (tree_step); one logarithm per draw at the end. Returns whether a drawn
// leaf's label lay outside [0, C) (a bad leaf_to_label), which the caller reports: an exception thrown from here (a
// target_clones function on a parallel_for thread) terminated the process.
TORCHXC_CPU_MULTIVERSION bool tree_sample_block_f32(const float* z, const float* weight, const float* bias, int64_t k,
                                                   int64_t depth, int64_t num_labels, uint64_t seed, int64_t S,
                                                   int64_t i0, int64_t n, const int64_t* leaf_to_label,
                                                   int64_t* labels, float* log_q) {
  // roff: zrow - row0, the walk's row within the block, as int32 so that the upper levels' lookup is one gather
  alignas(64) int32_t node[kWalkBlock], roff[kWalkBlock];
  alignas(64) int64_t zrow[kWalkBlock];
  alignas(64) uint32_t row[kWalkBlock], smp[kWalkBlock], hi[kWalkBlock];
  alignas(64) uint32_t rnd[4][kWalkBlock];
  alignas(64) float logit[kWalkBlock], lognum[kWalkBlock], den[kWalkBlock], tlogit[kWalkBlock / 2];
  alignas(64) int32_t tnode[kWalkBlock / 2];
  alignas(64) int64_t trow[kWalkBlock / 2];
  const int64_t row0 = i0 / S, shared_rows = (i0 + n - 1) / S - row0 + 1;
  {
    int64_t r = row0, sample = i0 - row0 * S;
    for (int64_t i = 0; i < n; ++i) {
      zrow[i] = r;
      roff[i] = static_cast<int32_t>(r - row0);
      row[i] = static_cast<uint32_t>(r);
      hi[i] = static_cast<uint32_t>(static_cast<uint64_t>(r) >> 32);
      smp[i] = static_cast<uint32_t>(sample);
      if (++sample == S) {
        sample = 0;
        ++r;
      }
    }
  }
  TORCHXC_PRAGMA(omp simd)
  for (int64_t i = 0; i < n; ++i) {
    node[i] = 0;
    lognum[i] = 0.0f;
    den[i] = 1.0f;
  }
  const auto shared = [&](int64_t l) { return (shared_rows << l) <= n / 2; };
  const int32_t leaf0 = static_cast<int32_t>((int64_t(1) << depth) - 1);  // node number of leaf 0
  // Prefetching costs a scalar pass over the walks per level: only worth it for the levels that lie beyond the L2
  // cache (the levels above them already fill it), whose loads come from L3 or memory; out-of-order execution hides
  // L2 latency on its own. Into L2 (T1), not L1: a block's lines (1024 for k = 16) would not fit L1 until they are
  // read. Against no prefetching (Xeon VM, one process): +4-7% draws/s at C = 2^18 (levels 15-17), +9% at 2^20,
  // level at 2^16; prefetching every level cost 4-9%, into L1 gained 2-3% less, and interleaving the prefetches with
  // the logits and steps in chunks of 32-256 walks lost 0-10%. The last pass also fetches the leaf labels below each
  // walk's node (one line: the two children's labels are adjacent): -1% / +0% on that Xeon VM, but +15% / +8% / +8% at
  // C = 2^18 / 2^16 / 2^20 on a Zen 4 VM (1 MiB L2), where the label lookup after the walk had 30% of the walk
  // function's samples at 2^18 (3.5% with the prefetch).
  const int64_t node_bytes = (k + 1) * int64_t(sizeof(float));
  const auto prefetch = [&](int64_t l) { return ((int64_t(1) << l) - 1) * node_bytes >= kL2CacheBytes; };
  for (int64_t l = 0; l < depth; ++l) {
    if (l % kTreeLevelsPerBlock == 0) {
      philox_block(seed, smp, row, static_cast<uint32_t>(l / kTreeLevelsPerBlock), hi, n, rnd);
    }
    const int32_t first = static_cast<int32_t>((int64_t(1) << l) - 1);
    if (shared(l)) {
      // Upper level: every node of the level for each of the block's rows, fewer dot products than walks; the
      // walks look their logit up (bit-identical to computing it, see tree_logits).
      const int64_t width = int64_t(1) << l, m = shared_rows << l;
      for (int64_t j = 0; j < m; ++j) {
        tnode[j] = first + static_cast<int32_t>(j & (width - 1));
        trow[j] = row0 + (j >> l);
      }
      tree_logits(z, weight, bias, k, tnode, trow, m, tlogit);
      const int32_t lv = static_cast<int32_t>(l);
      TORCHXC_PRAGMA(omp simd)
      for (int64_t i = 0; i < n; ++i) logit[i] = tlogit[(roff[i] << lv) + (node[i] - first)];
    } else {
      tree_logits(z, weight, bias, k, node, zrow, n, logit);
    }
    // The right child of the node at position p of this level holds only padding iff ((2p + 1) << shift) >= C,
    // i.e. iff p >= ceil(C / 2^shift) / 2.
    const int64_t shift = depth - l - 1;
    const int32_t empty_from = first + static_cast<int32_t>((((num_labels - 1) >> shift) + 1) / 2);
    const uint32_t* u32 = rnd[(l % kTreeLevelsPerBlock) / 2];
    int32_t any_refine = 0;
    TORCHXC_PRAGMA(omp simd reduction(| : any_refine))
    for (int64_t i = 0; i < n; ++i) {
      tree_step(logit[i], tree_level_bits(u32[i], l), node[i] >= empty_from, node[i], lognum[i], den[i], any_refine);
    }
    if (any_refine) refine_block(logit, u32, smp, row, hi, seed, l, empty_from, n, node, lognum);
    // Fetch the node each walk reads next (weights and bias) ahead of the next pass, which reads them in the same
    // order: one line per walk rather than both children.
    if (l + 1 < depth && !shared(l + 1) && prefetch(l + 1)) {
      const bool leaves = l + 2 == depth;  // the walks' next step reaches the leaves: fetch their labels too
      for (int64_t i = 0; i < n; ++i) {
        const char* w = reinterpret_cast<const char*>(weight + node[i] * k);
        for (int64_t b = 0; b < k * static_cast<int64_t>(sizeof(float)); b += 64) __builtin_prefetch(w + b, 0, 2);
        __builtin_prefetch(bias + node[i], 0, 2);
        if (leaves) __builtin_prefetch(leaf_to_label + (2 * int64_t(node[i]) + 1 - leaf0), 0, 2);
      }
    }
  }
  constexpr float kLn2 = 0.693147180559945309f;
  bool bad_label = false;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t label = leaf_to_label[node[i] - leaf0];
    bad_label |= static_cast<uint64_t>(label) >= static_cast<uint64_t>(num_labels);
    labels[i0 + i] = label;
  }
  TORCHXC_PRAGMA(omp simd)
  for (int64_t i = 0; i < n; ++i) {  // lognum - log(den), den = m 2^e with m in [1, 2)
    const uint32_t bits = __builtin_bit_cast(uint32_t, den[i]);
    const float m = __builtin_bit_cast(float, (bits & 0x007fffffu) | 0x3f800000u);
    const int32_t e = static_cast<int32_t>(bits >> 23) - 127;
    const float lq = lognum[i] - (log_1_2(m) + static_cast<float>(e) * kLn2);
    log_q[i0 + i] = bsel(den[i] != den[i], den[i], lq);  // a NaN logit on the path made den NaN: log q is NaN
  }
  return bad_label;
}

std::tuple<at::Tensor, at::Tensor> tree_sample_cpu(const at::Tensor& z_in, const at::Tensor& weight_in,
                                                   const at::Tensor& bias_in, const at::Tensor& leaf_to_label_in,
                                                   int64_t num_labels, int64_t num_samples, int64_t seed) {
  constexpr const char* op = "torchxc::tree_sample";
  const int64_t depth = check_tree_inputs(z_in, weight_in, bias_in, num_labels, op);
  check_sample_inputs(z_in, leaf_to_label_in, depth, num_samples, op);
  const at::Tensor z = z_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const at::Tensor leaf_to_label = leaf_to_label_in.contiguous();
  const int64_t B = z.size(0), k = z.size(1), S = num_samples;
  at::Tensor labels = at::empty({B, S}, z.options().dtype(at::kLong));
  at::Tensor log_q = at::empty({B, S}, z.options());
  std::atomic<bool> bad_label{false};
  const auto check_labels = [&] {
    TORCH_CHECK(!bad_label.load(), op, ": leaf_to_label maps a leaf below C = ", num_labels, " to a label outside ",
                "[0, C) (its first C entries must be a permutation of the labels)");
  };
  if (z.scalar_type() == at::kFloat && depth <= kMaxBlockDepth && S > 0) {
    const float* zp = z.const_data_ptr<float>();
    const float* wp = weight.const_data_ptr<float>();
    const float* bp = bias.const_data_ptr<float>();
    const int64_t* l2l = leaf_to_label.const_data_ptr<int64_t>();
    int64_t* lab = labels.mutable_data_ptr<int64_t>();
    float* lq = log_q.mutable_data_ptr<float>();
    // Blocks are handed out one at a time (an atomic counter) rather than as one fixed range per thread, so that a
    // thread slowed down by the machine does not hold up the call (+1% draws/s on the 2-core VM); a block's draws do
    // not depend on the thread that walks it.
    const int64_t total = B * S, blocks = (total + kWalkBlock - 1) / kWalkBlock;
    std::atomic<int64_t> next{0};
    at::parallel_for(0, std::min<int64_t>(blocks, at::get_num_threads()), 1, [&](int64_t, int64_t) {
      for (int64_t blk; (blk = next.fetch_add(1, std::memory_order_relaxed)) < blocks;) {
        const int64_t i = blk * kWalkBlock;
        if (tree_sample_block_f32(zp, wp, bp, k, depth, num_labels, static_cast<uint64_t>(seed), S, i,
                                  std::min(kWalkBlock, total - i), l2l, lab, lq)) {
          bad_label.store(true);
        }
      }
    });
    check_labels();
    return {labels, log_q};
  }
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "tree_sample_cpu", [&] {
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    const scalar_t* bp = bias.const_data_ptr<scalar_t>();
    const int64_t* l2l = leaf_to_label.const_data_ptr<int64_t>();
    int64_t* lab = labels.mutable_data_ptr<int64_t>();
    scalar_t* lq = log_q.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, std::max<int64_t>(1, 4096 / std::max<int64_t>(S, 1)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t s = 0; s < S; ++s) {
          const int64_t i = b * S + s;
          const int64_t leaf = tree_draw(zp + b * k, wp, bp, k, depth, num_labels, static_cast<uint64_t>(seed),
                                         static_cast<uint64_t>(b), static_cast<uint64_t>(s), lq + i);
          lab[i] = l2l[leaf];
          if (lab[i] < 0 || lab[i] >= num_labels) bad_label.store(true);
        }
      }
    });
  });
  check_labels();
  return {labels, log_q};
}

// The leaves of `labels` [B, P] (checked against C), from label_to_leaf [C] (each leaf checked to be a label's leaf,
// i.e. in [0, C): leaves C .. 2^depth - 1 are padding, of probability 0).
at::Tensor leaves_of(const at::Tensor& labels, const at::Tensor& label_to_leaf, int64_t num_labels, int64_t depth,
                     const char* op) {
  const at::Tensor lab = labels.contiguous();
  const int64_t* lp = lab.const_data_ptr<int64_t>();
  const int64_t* map = label_to_leaf.const_data_ptr<int64_t>();
  at::Tensor leaves = at::empty_like(lab);
  int64_t* out = leaves.mutable_data_ptr<int64_t>();
  const int64_t n = lab.numel();
  at::parallel_for(0, n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      TORCH_CHECK(lp[i] >= 0 && lp[i] < num_labels, op, ": label ", lp[i], " is out of range for ", num_labels,
                  " labels");
      out[i] = map[lp[i]];
      TORCH_CHECK(out[i] >= 0 && out[i] < num_labels, op, ": label_to_leaf[", lp[i], "] = ", out[i],
                  " is not the leaf of a label (expected [0, ", num_labels, "); leaves ", num_labels, " to ",
                  (int64_t(1) << depth) - 1, " of the depth-", depth, " tree are padding)");
    }
  });
  return leaves;
}

// log q of labels, and optionally (nodes, coef) [B, P, D] for the backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor> tree_paths_cpu(const at::Tensor& z_in, const at::Tensor& weight_in,
                                                              const at::Tensor& bias_in,
                                                              const at::Tensor& label_to_leaf_in,
                                                              const at::Tensor& labels, bool want_path,
                                                              const char* op) {
  const int64_t depth = check_log_prob_inputs(z_in, weight_in, bias_in, label_to_leaf_in, op);
  const int64_t C = label_to_leaf_in.size(0);
  check_same_device(z_in, labels, op, "z", "labels");
  TORCH_CHECK(labels.scalar_type() == at::kLong && labels.dim() == 2 && labels.size(0) == z_in.size(0), op,
              ": expected labels int64 of shape [", z_in.size(0), ", P], but got ", labels.scalar_type(), " ",
              labels.sizes());
  const at::Tensor z = z_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const at::Tensor leaves = leaves_of(labels, label_to_leaf_in.contiguous(), C, depth, op);
  const int64_t B = z.size(0), P = labels.size(1), k = z.size(1);
  at::Tensor log_q = at::empty({B, P}, z.options());
  at::Tensor nodes = at::empty({want_path ? B : 0, P, depth}, z.options().dtype(at::kLong));
  at::Tensor coef = at::empty({want_path ? B : 0, P, depth}, z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "tree_paths_cpu", [&] {
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    const scalar_t* bp = bias.const_data_ptr<scalar_t>();
    const int64_t* lf = leaves.const_data_ptr<int64_t>();
    scalar_t* lq = log_q.mutable_data_ptr<scalar_t>();
    int64_t* np = want_path ? nodes.mutable_data_ptr<int64_t>() : nullptr;
    scalar_t* cp = want_path ? coef.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B, std::max<int64_t>(1, 4096 / std::max<int64_t>(P, 1)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t p = 0; p < P; ++p) {
          const int64_t i = b * P + p;
          lq[i] = tree_path(zp + b * k, wp, bp, k, depth, C, lf[i], np ? np + i * depth : nullptr,
                            cp ? cp + i * depth : nullptr);
        }
      }
    });
  });
  return {log_q, nodes, coef};
}

at::Tensor tree_log_prob_cpu(const at::Tensor& z, const at::Tensor& weight, const at::Tensor& bias,
                             const at::Tensor& label_to_leaf, const at::Tensor& labels) {
  return std::get<0>(tree_paths_cpu(z, weight, bias, label_to_leaf, labels, false, "torchxc::tree_log_prob"));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tree_log_prob_backward_cpu(const at::Tensor& grad,
                                                                          const at::Tensor& z,
                                                                          const at::Tensor& weight,
                                                                          const at::Tensor& bias,
                                                                          const at::Tensor& label_to_leaf,
                                                                          const at::Tensor& labels) {
  constexpr const char* op = "torchxc::tree_log_prob_backward";
  check_log_prob_grad(grad, labels, op);
  auto paths = tree_paths_cpu(z, weight, bias, label_to_leaf, labels, true, op);
  return tree_grads_from_paths(grad, z.contiguous(), weight.contiguous(), std::get<1>(paths), std::get<2>(paths));
}

}  // namespace

// ---- tree_log_prob_all: log q(y | z) for every label ----------------------------------------------------------
//
// Rows in groups of R (16, or 4 for a group of at most 4 rows). Within a group, the log-probability of the node at
// position p of level l is kept in the slot of the first leaf below it, slot p << (D - l), the group's rows side by
// side (stage [C, R], the slots of real leaves): expanding a node adds its left branch's log-probability in place
// and writes its right child's slot, p << (D - l) + 2^(D - l - 1), so no level needs a buffer of its own. The
// levels below L = D - kAllTileLevels run subtree by subtree, each subtree's slots (2^kAllTileLevels x R values)
// staying in cache, and each dot product serves the group's rows at once (one node's weights, R rows in the vector
// lanes). Subtrees whose leaves are all padding are skipped. Then each label reads its leaf's slot: one line per
// label for the group. For k > kAllDotK the group's logits come from one matrix product first (at::addmm).
constexpr int64_t kAllRows = 16;
constexpr int64_t kAllRowsFew = 4;  // the group width for a last group of at most 4 rows
constexpr int64_t kAllTileLevels = 10;
// Wider projections: the logits by at::addmm, [nodes, R] (k = 1024, 512 rows, C = 4096: 2.0x the time of the
// level-by-level ATen version with the dot products here, where each multiply-add loads a weight and a z vector).
constexpr int64_t kAllDotK = 64;
// Labels between a slot's prefetch and its read: the slots are random lines of a stage larger than the caches;
// 8-32 all measured 8-10% faster than no prefetch at B = 512, C = 10^6 (one 2-core Xeon).
constexpr int64_t kGatherAhead = 16;
constexpr int64_t kGatherTile = 64;

// log(1 + a) for a in [0, 1], vectorizable, to a few ulp: 2 atanh(t) with t = a / (2 + a) for a <= sqrt(2) - 1 (t
// keeps a's relative precision, so tiny a stay exact), else t = (a - 1) / (a + 3) (for (1 + a) / 2) plus log 2; |t|
// <= 0.1716 either way, the series of log_1_2.
TORCHXC_ALWAYS_INLINE float log1p_01(float a) {
  constexpr float kSqrt2m1 = 0.41421356237f, kLn2 = 0.693147180559945309f;
  const bool high = a > kSqrt2m1;
  const float t = bsel(high, a - 1.0f, a) / bsel(high, a + 3.0f, a + 2.0f);
  return two_atanh_small(t) + bsel(high, kLn2, 0.0f);
}

TORCHXC_ALWAYS_INLINE float log1p_exp_neg_abs(float x) { return log1p_01(vexp_nonpos(-std::fabs(x))); }
TORCHXC_ALWAYS_INLINE double log1p_exp_neg_abs(double x) { return std::log1p(std::exp(-std::fabs(x))); }

// One group's view of the tree: zt, the group's z transposed [k, R]; or xt, its logits [nodes, R] (k > kAllDotK).
template <typename T>
struct AllGroup {
  const T* zt;
  const T* xt;
  const T* weight;
  const T* bias;
  int64_t k, depth, C;
};

// Expands the subtree of the node at position s of level l0 through levels l0 .. l1 - 1 (positions whose leaves are
// all padding skipped).
template <int64_t R, typename T>
TORCHXC_ALWAYS_INLINE void expand_subtree(const AllGroup<T>& g, int64_t l0, int64_t s, int64_t l1, T* stage) {
  const int64_t k = g.k, depth = g.depth, C = g.C;
  for (int64_t l = l0; l < l1; ++l) {
    const int64_t shift = depth - l, first = (int64_t(1) << l) - 1;
    const int64_t p0 = s << (l - l0), p1 = std::min((s + 1) << (l - l0), ((C - 1) >> shift) + 1);
    for (int64_t p = p0; p < p1; ++p) {
      if (right_child_empty(p, l, depth, C)) continue;  // left with probability 1; the right slots are padding
      T x[R];
      if (g.xt != nullptr) {
        for (int64_t r = 0; r < R; ++r) x[r] = g.xt[(first + p) * R + r];
      } else {
        // w . z in four partial sums (j mod 4), each row in its own lane: one chain of k dependent multiply-adds
        // per node made wide nodes latency-bound (k = 1024, one row: 4.5x the time of ATen's matrix-vector
        // product). The same order for every R, so a row's values do not depend on its group; the bias last.
        const T* w = g.weight + (first + p) * k;
        T acc[4][R] = {};
        int64_t j = 0;
        for (; j + 4 <= k; j += 4) {
          for (int64_t a = 0; a < 4; ++a) {
            const T wj = w[j + a];
            TORCHXC_PRAGMA(omp simd)
            for (int64_t r = 0; r < R; ++r) acc[a][r] += wj * g.zt[(j + a) * R + r];
          }
        }
        for (; j < k; ++j) {
          const T wj = w[j];
          TORCHXC_PRAGMA(omp simd)
          for (int64_t r = 0; r < R; ++r) acc[j & 3][r] += wj * g.zt[j * R + r];
        }
        TORCHXC_PRAGMA(omp simd)
        for (int64_t r = 0; r < R; ++r) x[r] = ((acc[0][r] + acc[1][r]) + (acc[2][r] + acc[3][r])) + g.bias[first + p];
      }
      T* left = stage + (p << shift) * R;
      T* right = left + (int64_t(1) << (shift - 1)) * R;
      TORCHXC_PRAGMA(omp simd)
      for (int64_t r = 0; r < R; ++r) {
        // log sigmoid(-x) = -max(x, 0) - log1p(e^-|x|), log sigmoid(x) = min(x, 0) - log1p(e^-|x|)
        const T soft = log1p_exp_neg_abs(x[r]);
        right[r] = left[r] + (bsel(x[r] < T(0), x[r], T(0)) - soft);
        left[r] = left[r] + (-bsel(x[r] > T(0), x[r], T(0)) - soft);
      }
    }
  }
}

// One row (R = 1): the lanes are a level's nodes instead of the group's rows. Each node's dot product keeps the
// same four partial sums (j mod 4) and order as expand_subtree, and the log-sigmoids are the same functions, so a
// row's values are bitwise those it gets in a group of 4 or 16 rows (tested). The dot product is written out here
// rather than shared with expand_subtree: its R-lane form with R = 1 loses the 4-wide vector over the partial sums
// (10^6 labels: 16-17 ms against 9-10 ms, 2 threads, alternating builds). (expand_subtree with 4 lanes for one row
// computed three wasted lanes of every exponential and logarithm and kept a 4x larger stage: 10^6 labels took
// 1.56x the time of the level-by-level ATen version.)
constexpr int64_t kRowNodes = 16;  // nodes per vector step
template <typename T>
TORCHXC_ALWAYS_INLINE void expand_subtree_row(const AllGroup<T>& g, int64_t l0, int64_t s, int64_t l1, T* stage) {
  const int64_t k = g.k, depth = g.depth, C = g.C;
  for (int64_t l = l0; l < l1; ++l) {
    const int64_t shift = depth - l, first = (int64_t(1) << l) - 1, half = int64_t(1) << (shift - 1);
    const int64_t p0 = s << (l - l0), p1 = std::min((s + 1) << (l - l0), ((C - 1) >> shift) + 1);
    for (int64_t q0 = p0; q0 < p1; q0 += kRowNodes) {
      const int64_t n = std::min(kRowNodes, p1 - q0);
      T x[kRowNodes] = {}, lr[kRowNodes], ll[kRowNodes];
      for (int64_t i = 0; i < n; ++i) {
        const int64_t node = first + q0 + i;
        if (g.xt != nullptr) {
          x[i] = g.xt[node];
          continue;
        }
        const T* w = g.weight + node * k;
        T acc[4] = {};
        int64_t j = 0;
        for (; j + 4 <= k; j += 4) {
          TORCHXC_PRAGMA(omp simd)
          for (int64_t a = 0; a < 4; ++a) acc[a] += w[j + a] * g.zt[j + a];
        }
        for (; j < k; ++j) acc[j & 3] += w[j] * g.zt[j];
        x[i] = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + g.bias[node];
      }
      TORCHXC_PRAGMA(omp simd)
      for (int64_t i = 0; i < kRowNodes; ++i) {
        const T soft = log1p_exp_neg_abs(x[i]);
        lr[i] = bsel(x[i] < T(0), x[i], T(0)) - soft;
        ll[i] = -bsel(x[i] > T(0), x[i], T(0)) - soft;
      }
      for (int64_t i = 0; i < n; ++i) {
        const int64_t p = q0 + i;
        if (right_child_empty(p, l, depth, C)) continue;  // left with probability 1; the right slots are padding
        T* left = stage + (p << shift);
        left[half] = left[0] + lr[i];
        left[0] = left[0] + ll[i];
      }
    }
  }
}

// The ISA clones (target_clones does not apply to templates): float32 with 16, 4 or 1 rows per group; float64 is
// bound by its scalar exp and log1p.
TORCHXC_CPU_MULTIVERSION void expand_subtree_f32x16(const AllGroup<float>& g, int64_t l0, int64_t s, int64_t l1,
                                                    float* stage) {
  expand_subtree<16>(g, l0, s, l1, stage);
}
TORCHXC_CPU_MULTIVERSION void expand_subtree_f32x4(const AllGroup<float>& g, int64_t l0, int64_t s, int64_t l1,
                                                   float* stage) {
  expand_subtree<4>(g, l0, s, l1, stage);
}
TORCHXC_CPU_MULTIVERSION void expand_subtree_f32x1(const AllGroup<float>& g, int64_t l0, int64_t s, int64_t l1,
                                                   float* stage) {
  expand_subtree_row(g, l0, s, l1, stage);
}
template <int64_t R>
void expand_subtree_any(const AllGroup<float>& g, int64_t l0, int64_t s, int64_t l1, float* stage) {
  static_assert(R == kAllRows || R == kAllRowsFew || R == 1, "a float32 clone per group width");
  (R == kAllRows ? expand_subtree_f32x16 : R == kAllRowsFew ? expand_subtree_f32x4 : expand_subtree_f32x1)(
      g, l0, s, l1, stage);
}
template <int64_t R>
void expand_subtree_any(const AllGroup<double>& g, int64_t l0, int64_t s, int64_t l1, double* stage) {
  if constexpr (R == 1) {
    expand_subtree_row(g, l0, s, l1, stage);
  } else {
    expand_subtree<R>(g, l0, s, l1, stage);
  }
}

// One group: rows r0 .. r0 + nr - 1 (nr <= R) of out [B, C]. inner: run the group's subtrees and labels in parallel
// (few groups); otherwise the caller runs groups in parallel.
template <int64_t R, typename T>
void log_prob_all_group(const at::Tensor& z, const at::Tensor& weight, const at::Tensor& bias,
                        const int64_t* label_to_leaf, int64_t depth, int64_t C, int64_t r0, int64_t nr, bool inner,
                        T* stage, T* out) {
  const int64_t k = z.size(1);
  const T* zp = z.const_data_ptr<T>();
  std::vector<T> zt(k * R);  // rows past the group's repeat its last row
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t r = 0; r < R; ++r) zt[j * R + r] = zp[(r0 + std::min(r, nr - 1)) * k + j];
  }
  at::Tensor xt;
  if (k > kAllDotK) {
    xt = at::addmm(bias.unsqueeze(1), weight, at::from_blob(zt.data(), {k, R}, z.options()));  // [nodes, R]
  }
  const AllGroup<T> g{zt.data(), xt.defined() ? xt.const_data_ptr<T>() : nullptr, weight.const_data_ptr<T>(),
                      bias.const_data_ptr<T>(), k, depth, C};
  for (int64_t r = 0; r < R; ++r) stage[r] = T(0);  // the root's slot
  const int64_t top = std::max<int64_t>(0, depth - kAllTileLevels);
  expand_subtree_any<R>(g, 0, 0, top, stage);
  const int64_t subtrees = ((C - 1) >> (depth - top)) + 1;  // those holding a label
  const auto bottom = [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s) expand_subtree_any<R>(g, top, s, depth, stage);
  };
  // Labels in tiles of kGatherTile: the group's values for a tile are transposed on the stack, then each row's run is
  // copied out whole (storing every label's values straight into the group's rows, C apart, took 1.75x as long at
  // C = 2^14, B = 512: the rows' lines compete for the same cache sets).
  const auto gather = [&](int64_t y0, int64_t y1) {
    if constexpr (R == 1) {  // one row: straight into it
      T* row = out + r0 * C;
      for (int64_t y = y0; y < y1; ++y) {
        if (y + kGatherAhead < y1) __builtin_prefetch(stage + label_to_leaf[y + kGatherAhead], 0, 0);
        row[y] = stage[label_to_leaf[y]];
      }
      return;
    }
    T tile[R][kGatherTile];
    for (int64_t t0 = y0; t0 < y1; t0 += kGatherTile) {
      const int64_t n = std::min(kGatherTile, y1 - t0);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t y = t0 + i;
        if (y + kGatherAhead < y1) __builtin_prefetch(stage + label_to_leaf[y + kGatherAhead] * R, 0, 0);
        const T* v = stage + label_to_leaf[y] * R;
        for (int64_t r = 0; r < R; ++r) tile[r][i] = v[r];
      }
      for (int64_t r = 0; r < nr; ++r) std::memcpy(out + (r0 + r) * C + t0, tile[r], n * sizeof(T));
    }
  };
  if (inner) {
    at::parallel_for(0, subtrees, 1, bottom);
    at::parallel_for(0, C, 1 << 14, gather);
  } else {
    bottom(0, subtrees);
    gather(0, C);
  }
}

at::Tensor tree_log_prob_all_cpu(const at::Tensor& z_in, const at::Tensor& weight_in, const at::Tensor& bias_in,
                                 const at::Tensor& label_to_leaf_in) {
  constexpr const char* op = "torchxc::tree_log_prob_all";
  const int64_t depth = check_log_prob_inputs(z_in, weight_in, bias_in, label_to_leaf_in, op);
  const int64_t C = label_to_leaf_in.size(0);
  const at::Tensor label_to_leaf = label_to_leaf_in.contiguous();
  const int64_t* l2l = label_to_leaf.const_data_ptr<int64_t>();
  {  // a permutation of the leaves 0 .. C - 1 (so every label reads a slot its subtree wrote)
    std::vector<uint8_t> seen(C, 0);
    bool ok = true;
    for (int64_t y = 0; y < C && ok; ++y) {
      const int64_t leaf = l2l[y];
      ok = leaf >= 0 && leaf < C && !seen[leaf];
      if (ok) seen[leaf] = 1;
    }
    TORCH_CHECK(ok, not_a_permutation_message(op, C));
  }
  const at::Tensor z = z_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const int64_t B = z.size(0), k = z.size(1);
  at::Tensor out = at::empty({B, C}, z.options());
  if (B == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "tree_log_prob_all_cpu", [&] {
    scalar_t* op_ = out.mutable_data_ptr<scalar_t>();
    const int64_t groups = (B + kAllRows - 1) / kAllRows;
    // [C, R]: slots of padding leaves are never written
    const int64_t stage_numel = C * (B == 1 ? 1 : B <= kAllRowsFew ? kAllRowsFew : kAllRows);
    // Groups in parallel when there are enough of them and a stage per thread stays small (and the logits are not
    // a matrix product, which runs on all threads itself); else one group at a time, its subtrees and labels in
    // parallel.
    const bool outer = groups >= 2 * at::get_num_threads() && stage_numel * int64_t(sizeof(scalar_t)) <= (8 << 20) &&
                       k <= kAllDotK;
    const auto group = [&](int64_t g, bool inner, scalar_t* stage) {
      const int64_t nr = std::min(kAllRows, B - g * kAllRows);
      if (nr > kAllRowsFew) {
        log_prob_all_group<kAllRows>(z, weight, bias, l2l, depth, C, g * kAllRows, nr, inner, stage, op_);
      } else if (nr > 1) {  // 4 lanes rather than 16: the exponential and logarithm per node are what a row costs
        log_prob_all_group<kAllRowsFew>(z, weight, bias, l2l, depth, C, g * kAllRows, nr, inner, stage, op_);
      } else {  // one row: the lanes are the nodes of a level
        log_prob_all_group<1>(z, weight, bias, l2l, depth, C, g * kAllRows, nr, inner, stage, op_);
      }
    };
    if (outer) {
      at::parallel_for(0, groups, 1, [&](int64_t g0, int64_t g1) {
        std::unique_ptr<scalar_t[]> stage(new scalar_t[stage_numel]);  // uninitialized: slots are written before read
        for (int64_t g = g0; g < g1; ++g) group(g, false, stage.get());
      });
    } else {
      std::unique_ptr<scalar_t[]> stage(new scalar_t[stage_numel]);
      for (int64_t g = 0; g < groups; ++g) group(g, true, stage.get());
    }
  });
  return out;
}

TORCH_LIBRARY_IMPL(torchxc, CPU, m) {
  m.impl("tree_log_prob_all", &tree_log_prob_all_cpu);
  m.impl("tree_sample", &tree_sample_cpu);
  m.impl("tree_log_prob", &tree_log_prob_cpu);
  m.impl("tree_log_prob_backward", &tree_log_prob_backward_cpu);
}

}  // namespace torchxc
