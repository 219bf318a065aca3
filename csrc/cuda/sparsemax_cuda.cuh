// CUDA building blocks of the sparsemax family, shared by sparsemax_cuda.cu (forward, backward) and
// sparsemax_loss_cuda.cu.
//
// Three paths, picked by the row length d (see dispatch_row_config):
//   * warp per row (d <= 1024): a row lives in the registers of one warp, up to 32 values per lane;
//   * block per row (d <= 32768): a row lives in the registers of one block of 256..1024 threads;
//   * split rows (longer, e.g. 1M labels): chunks of 8192 values in registers of separate blocks. Each chunk
//     finds its own sparsemax threshold; the largest chunk threshold is a lower bound of the row's, so only
//     values above it (usually a few hundred of 1M) are gathered, and one block per row finishes the exact
//     search on them. Then the output is written chunk by chunk.
// sparsemax_cuda.cu also has cooperative chunk kernels (coop.cuh), the default only for float32 backward rows longer
// than 16384.
// Everything runs on the current stream; no host synchronisation.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>
#include <c10/cuda/CUDAException.h>

#include <cmath>
#include <cstdlib>
#include <limits>

#include "../common/sparsemax_threshold.h"
#include "row_tile.cuh"

namespace torchxc {
namespace cuda {

// The split path's chunk: one block of 512 threads holding 16 values each.
constexpr int kChunkThreads = 512;
constexpr int kChunkItems = 16;
constexpr int kChunk = kChunkThreads * kChunkItems;
constexpr int kSolveThreads = 1024;

template <typename acc_t>
__device__ __forceinline__ acc_t quiet_nan() {
  return std::numeric_limits<acc_t>::quiet_NaN();
}

template <typename acc_t>
__device__ __forceinline__ acc_t neg_inf() {
  return -std::numeric_limits<acc_t>::infinity();
}

// Shared memory for row reductions of blocks up to 1024 threads.
template <typename acc_t>
struct RowSmem {
  acc_t f[32];
  int i[32];
};

// Two row reductions in one round (one pair of barriers for block rows); smem_a and smem_b need 32 slots each.
template <int TPR, typename A, typename B, typename OpA, typename OpB>
__device__ __forceinline__ void row_allreduce2(A& a, B& b, OpA op_a, OpB op_b, A* smem_a, B* smem_b) {
  constexpr int W = TPR < kWarp ? TPR : kWarp;
  const unsigned mask = row_lane_mask<TPR>();
#pragma unroll
  for (int o = W / 2; o > 0; o /= 2) {
    a = op_a(a, __shfl_xor_sync(mask, a, o));
    b = op_b(b, __shfl_xor_sync(mask, b, o));
  }
  if constexpr (TPR > kWarp) {
    const int warp = threadIdx.x / kWarp;
    if (threadIdx.x % kWarp == 0) {
      smem_a[warp] = a;
      smem_b[warp] = b;
    }
    __syncthreads();
    a = combine_warp_partials<TPR / kWarp>(smem_a, op_a);
    b = combine_warp_partials<TPR / kWarp>(smem_b, op_b);
    __syncthreads();
  }
}

// Sum and count over the row, in one reduction round.
template <int TPR, typename acc_t>
__device__ __forceinline__ void row_allreduce_sum_count(acc_t& s, int& c, RowSmem<acc_t>& smem) {
  row_allreduce2<TPR>(s, c, Sum(), Sum(), smem.f, smem.i);
}

template <int TPR, int ITEMS, typename acc_t>
__device__ __forceinline__ acc_t tile_max(const acc_t (&v)[ITEMS], RowSmem<acc_t>& smem) {
  acc_t m = neg_inf<acc_t>();
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) m = MaxNaN()(m, v[i]);
  return row_allreduce<TPR>(m, MaxNaN(), smem.f);
}

// Candidates of a row kept in shared memory after the first step of the threshold search (see tile_threshold):
// up to one per thread for a block row. Warp rows search over their registers: gathering their candidates cost
// more than the steps it saved (H200, forward float32 8192x128 8.4 -> 9.9 us, 4096x1024 15.8 -> 17.2 us, with
// 64 candidates per warp), while block rows gained (256x32768 44.8 -> 38.8 us): their steps each need two
// block-wide barriers.
template <int TPR>
constexpr int threshold_candidates() {
  return TPR > kWarp ? TPR : 0;
}

// Threshold t = tau - max of a row held in registers as u = x - max (padding -inf), by the search of
// sparsemax_threshold.h, which starts at t = -1 and only raises t. So only the values u > -1 ever count: after
// counting them over the registers, a row with at most threshold_candidates<TPR>() of them (the usual case: a
// few dozen of 32768 Gaussian scores) gathers them into shared memory, and every warp of the row runs the
// whole search over that short list with warp shuffles alone: no pass over all ITEMS per step and no block-wide
// barrier per step. Each warp computes the same bits (same order, same butterfly), so control flow stays uniform.
// Flatter rows (more candidates) and warp rows search over the registers. BLOCK: the kernel's block size;
// ITEMS <= 32.
template <int TPR, int ITEMS, int BLOCK, typename acc_t>
__device__ __forceinline__ acc_t tile_threshold(const acc_t (&u)[ITEMS], RowSmem<acc_t>& smem, int max_newton) {
  auto sum_above = [&](acc_t t, bool) -> SumCount<acc_t> {
    acc_t s = 0;
    int c = 0;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      const bool keep = u[i] > t;
      s += keep ? u[i] - t : acc_t(0);
      c += keep;
    }
    row_allreduce_sum_count<TPR>(s, c, smem);
    return {s, c};
  };
  constexpr int K = threshold_candidates<TPR>();
  if constexpr (K == 0 || ITEMS < 4) {
    return sparsemax_threshold<acc_t>(sum_above, max_newton);
  } else {
    static_assert(ITEMS <= 32, "candidate masks are 32-bit");
    static_assert(TPR == BLOCK, "block rows span the whole block");
    __shared__ acc_t cand[K];
    uint32_t keep = 0;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) keep |= uint32_t(u[i] > acc_t(-1)) << i;
    int n;
    int pos = block_exclusive_scan<TPR>(__popc(keep), smem.i, &n);
    if (n > K) return sparsemax_threshold<acc_t>(sum_above, max_newton);  // uniform across the block
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      if ((keep >> i) & 1u) cand[pos++] = u[i];
    }
    __syncthreads();
    const int lane = threadIdx.x % kWarp;
    auto sum_above_cand = [&](acc_t t, bool) -> SumCount<acc_t> {
      acc_t s = 0;
      int c = 0;
      for (int j = lane; j < n; j += kWarp) {
        const acc_t v = cand[j];
        const bool in = v > t;
        s += in ? v - t : acc_t(0);
        c += in;
      }
      row_allreduce_sum_count<kWarp>(s, c, smem);  // shuffles only
      return {s, c};
    };
    return sparsemax_threshold<acc_t>(sum_above_cand, max_newton);
  }
}

// Loads a row (or chunk), finds its maximum m and threshold t and leaves u = x - m in registers.
// Returns false (t = NaN) when the maximum is not finite.
template <int TPR, int ITEMS, int VEC, int BLOCK, typename acc_t, typename scalar_t>
__device__ __forceinline__ bool tile_load_threshold(acc_t (&u)[ITEMS], const scalar_t* row, int64_t d, int lane,
                                                    bool valid, RowSmem<acc_t>& smem, int max_newton, acc_t* m_out,
                                                    acc_t* t_out) {
  tile_load<TPR, ITEMS, VEC>(u, row, d, lane, valid, neg_inf<acc_t>());
  const acc_t m = tile_max<TPR>(u, smem);
  *m_out = m;
  if (!isfinite(m)) {  // uniform across the row
    *t_out = quiet_nan<acc_t>();
    return false;
  }
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) u[i] -= m;
  *t_out = tile_threshold<TPR, ITEMS, BLOCK>(u, smem, max_newton);
  return true;
}

// ---- launch configuration ---------------------------------------------------------------------------------------

template <int TPR_, int ITEMS_, int BLOCK_>
struct RowConfig {
  static constexpr int TPR = TPR_;
  static constexpr int ITEMS = ITEMS_;
  static constexpr int BLOCK = BLOCK_;
  static constexpr int ROWS_PER_BLOCK = BLOCK_ / TPR_;
};

// Rows longer than this take the split path even where a register path fits them: the environment variable
// TORCHXC_CUDA_SPLIT_ABOVE, read at every call, for tuning experiments (tools/tune_split_threshold.py) and for
// testing the split path on short rows (tools/cuda_paths.py). Default: only rows no register path fits.
inline int64_t cuda_split_above() {
  const char* s = std::getenv("TORCHXC_CUDA_SPLIT_ABOVE");
  return s ? std::atoll(s) : std::numeric_limits<int64_t>::max();
}

// Calls f(RowConfig<...>{}) for the register path that fits d, or returns false when the row needs the split
// path. WORDS is the number of 32-bit registers a kernel keeps per row value (2 for double, more when it also
// holds a target); 1024-thread blocks have 64 registers per thread, so they get at most 32 words of values.
// Configurations a kernel cannot use are not instantiated.
template <int WORDS, typename F>
bool dispatch_row_config(int64_t d, F&& f) {
  if (d > 0 && d > cuda_split_above()) return false;  // empty rows never take the split path (a grid of 0 chunks)
  if (d <= 8) return f(RowConfig<8, 1, 128>{});  // sub-warp groups: 4 rows per warp
  if (d <= 16) return f(RowConfig<16, 1, 128>{});
  if (d <= 32) return f(RowConfig<32, 1, 128>{});
  if (d <= 64) return f(RowConfig<32, 2, 128>{});
  if (d <= 128) return f(RowConfig<32, 4, 128>{});
  if (d <= 256) return f(RowConfig<32, 8, 128>{});
  if (d <= 512) return f(RowConfig<32, 16, 128>{});
  if (d <= 1024) return f(RowConfig<32, 32, 128>{});
  if (d <= 2048) return f(RowConfig<256, 8, 256>{});
  if (d <= 8192) return f(RowConfig<512, 16, 512>{});
  if constexpr (16 * WORDS <= 32) {
    if (d <= 16384) return f(RowConfig<1024, 16, 1024>{});
  }
  if constexpr (32 * WORDS <= 32) {
    if (d <= 32768) return f(RowConfig<1024, 32, 1024>{});
  }
  return false;
}

// Widest vector (in elements, at most 16 bytes and at most ITEMS) usable for rows of length d starting at `ptrs`.
template <typename scalar_t, int ITEMS>
constexpr int max_vec() {
  constexpr int v = 16 / sizeof(scalar_t);
  return v < ITEMS ? v : ITEMS;
}

inline bool rows_aligned(int64_t d, int vec, std::initializer_list<const void*> ptrs) {
  if (vec <= 1 || d % vec != 0) return false;
  for (const void* p : ptrs) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return false;
  }
  return true;
}

inline int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Limits of the CUDA kernels: counts within a row are 32-bit, and a 1-D grid has at most 2^31 - 1 blocks.
inline void check_cuda_row_limits(int64_t rows, int64_t d, const char* op) {
  TORCH_CHECK(d < (int64_t(1) << 31), op, ": CUDA kernels support rows of up to 2^31 - 1 elements, but got ", d);
  TORCH_CHECK(rows / 4 < (int64_t(1) << 31) - 1, op, ": CUDA kernels support up to 2^33 rows, but got ", rows);
  // rows of more than 1024 values take a block (or, split, a finishing block) per row: gridDim.x < 2^31
  TORCH_CHECK(d <= 1024 || rows < (int64_t(1) << 31) - 1, op, ": CUDA kernels support up to 2^31 - 2 rows of more "
              "than 1024 values, but got ", rows);
}

// Grid for kernels indexed by (chunk, row): rows beyond the 65535 limit of gridDim.y are looped over.
inline dim3 chunk_row_grid(int64_t nchunks, int64_t rows) {
  return dim3(static_cast<unsigned>(nchunks), static_cast<unsigned>(rows < 65535 ? rows : 65535));
}

}  // namespace cuda
}  // namespace torchxc
