// CUDA kernels of the ZLPR loss (math in csrc/common/zlpr_common.h).
//
// Rows that fit in registers (warp per row up to 1024 classes, block per row up to 16384 with soft labels and
// 32768 with hard ones) are read once: the two maxima and the two sums of exponentials are row reductions over
// registers, and the gradient is written from the same registers. Longer rows (e.g. a million classes) are split
// into chunks of 8192: each chunk reduces its maxima and sums relative to its own maxima, a small kernel merges
// them per row (rescaling the sums), and the gradient pass reads the chunk again. Hard labels and masks are kept
// as bits; sparse positives become a per-row bitmask first, after which they are hard labels. Soft labels
// outside [0, 1] and positive indices out of range trigger device-side assertions. Current stream, launch
// checks, no host synchronisation. A cooperative chunk path (coop.cuh) runs when TORCHXC_CUDA_COOP_ABOVE asks for it:
// slower than these on an H200, kept for tuning on other chips.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/zlpr_common.h"
#include "coop.cuh"
#include "sparsemax_cuda.cuh"

namespace torchxc {
namespace cuda {
namespace {

struct ZlprArgs {
  const void* labels;       // bool [rows, d], scalar_t [rows, d], or uint32 bitmask [rows, words]
  const bool* mask;         // nullptr, or bool rows of d with stride mask_stride (0: one mask for all rows)
  int64_t mask_stride;
  int64_t words;            // bitmask words per row
};

// log(1 + sum) from its maximum m and the sum of exponentials relative to it, accurate for tiny sums.
template <typename acc_t>
__device__ __forceinline__ acc_t zlpr_term(acc_t m, acc_t s) {
  return m == acc_t(0) ? log1p(s) : m + log(exp(-m) + s);
}

// A row's scores in registers with their labels: bits (hard, sparse) or values (soft), and validity bits.
template <typename scalar_t, int TPR, int ITEMS, int VEC, ZlprLabels L>
struct ZlprTile {
  using acc_t = at::opmath_type<scalar_t>;
  acc_t s[ITEMS];
  acc_t t[L == ZlprLabels::kSoft ? ITEMS : 1];
  uint32_t pos = 0, valid = 0;

  // Loads elements [c0, c0 + n) of row `row` (n <= TPR * ITEMS).
  __device__ __forceinline__ void load(const scalar_t* x, const ZlprArgs& a, int64_t row, int64_t d, int64_t c0,
                                       int64_t n, int lane, bool row_valid) {
    tile_load<TPR, ITEMS, VEC>(s, x + row * d + c0, n, lane, row_valid, neg_inf<acc_t>());
    if constexpr (L == ZlprLabels::kSoft) {
      tile_load<TPR, ITEMS, VEC>(t, static_cast<const scalar_t*>(a.labels) + row * d + c0, n, lane, row_valid,
                                 acc_t(0));
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        CUDA_KERNEL_ASSERT_MSG(t[i] >= acc_t(0) && t[i] <= acc_t(1), "torchxc::zlpr_loss: labels must lie in [0, 1]");
      }
    } else if constexpr (L == ZlprLabels::kHard) {
      pos = tile_load_bits<TPR, ITEMS, VEC>(static_cast<const bool*>(a.labels) + row * d + c0, n, lane, row_valid);
    } else {
      const uint32_t* bits = static_cast<const uint32_t*>(a.labels) + row * a.words;
#pragma unroll
      for (int i = 0; i < ITEMS; ++i) {
        const int64_t col = c0 + tile_col<TPR, ITEMS, VEC>(i, lane);
        if (row_valid && col - c0 < n) pos |= ((__ldg(bits + (col >> 5)) >> (col & 31)) & 1u) << i;
      }
    }
    const uint32_t mask_bits =
        a.mask ? tile_load_bits<TPR, ITEMS, VEC>(a.mask + row * a.mask_stride + c0, n, lane, row_valid) : ~0u;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) valid |= uint32_t(s[i] != neg_inf<acc_t>()) << i;  // padding is -inf
    valid &= mask_bits;
  }

  __device__ __forceinline__ bool in_neg(int i) const {
    const bool v = (valid >> i) & 1u;
    if constexpr (L == ZlprLabels::kSoft) return v && t[i] < acc_t(1);
    else return v && !((pos >> i) & 1u);
  }
  __device__ __forceinline__ bool in_pos(int i) const {
    const bool v = (valid >> i) & 1u;
    if constexpr (L == ZlprLabels::kSoft) return v && t[i] > acc_t(0);
    else return v && ((pos >> i) & 1u);
  }
  __device__ __forceinline__ acc_t w_neg(int i) const {
    if constexpr (L == ZlprLabels::kSoft) return acc_t(1) - t[i];
    else return acc_t(1);
  }
  __device__ __forceinline__ acc_t w_pos(int i) const {
    if constexpr (L == ZlprLabels::kSoft) return t[i];
    else return acc_t(1);
  }

  // Thread-local maxima over each sum (NaN-propagating; 0 stands for the "1 +" term).
  __device__ __forceinline__ void local_max(acc_t& mneg, acc_t& mpos) const {
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      if (in_neg(i)) mneg = MaxNaN()(mneg, s[i]);
      if (in_pos(i)) mpos = MaxNaN()(mpos, -s[i]);
    }
  }

  // Hard labels put each valid value in exactly one of the two sums: its exponential e^{+-s - m} is the only one
  // computed (the exponentials are most of a row's arithmetic; soft labels need both).
  __device__ __forceinline__ acc_t hard_exp(int i, acc_t mneg, acc_t mpos) const {
    const bool p = (pos >> i) & 1u;
    return exp(p ? -s[i] - mpos : s[i] - mneg);
  }

  __device__ __forceinline__ void local_sum(acc_t mneg, acc_t mpos, acc_t& sneg, acc_t& spos) const {
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      if constexpr (L == ZlprLabels::kSoft) {
        if (in_neg(i)) sneg += w_neg(i) * exp(s[i] - mneg);
        if (in_pos(i)) spos += w_pos(i) * exp(-s[i] - mpos);
      } else {
        const acc_t e = hard_exp(i, mneg, mpos);
        if (in_neg(i)) sneg += e;
        if (in_pos(i)) spos += e;
      }
    }
  }

  // The tile's maxima over each sum (0 stands for the "1 +" term) and the sums of exponentials relative to them,
  // reduced over the TPR threads that hold it.
  template <int RTPR>
  __device__ __forceinline__ void row_stats(acc_t& mneg, acc_t& sneg, acc_t& mpos, acc_t& spos, RowSmem<acc_t>& smem_a,
                                            RowSmem<acc_t>& smem_b) const {
    mneg = 0, mpos = 0;
    local_max(mneg, mpos);
    row_allreduce2<RTPR>(mneg, mpos, MaxNaN(), MaxNaN(), smem_a.f, smem_b.f);
    sneg = 0, spos = 0;
    local_sum(mneg, mpos, sneg, spos);
    row_allreduce2<RTPR>(sneg, spos, Sum(), Sum(), smem_a.f, smem_b.f);
  }

  // Gradient into s (then stored): w e^{s - m_neg} inv_zneg - t e^{-s - m_pos} inv_zpos; all NaN for a NaN row.
  __device__ __forceinline__ void gradient(acc_t mneg, acc_t mpos, acc_t inv_zneg, acc_t inv_zpos) {
    const bool nan_row = mneg != mneg || mpos != mpos;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      acc_t g = 0;
      if constexpr (L == ZlprLabels::kSoft) {
        if (in_neg(i)) g += w_neg(i) * exp(s[i] - mneg) * inv_zneg;
        if (in_pos(i)) g -= w_pos(i) * exp(-s[i] - mpos) * inv_zpos;
      } else {
        const acc_t e = hard_exp(i, mneg, mpos);
        g = in_neg(i) ? e * inv_zneg : in_pos(i) ? -(e * inv_zpos) : acc_t(0);
      }
      s[i] = nan_row ? quiet_nan<acc_t>() : g;
    }
  }
};

template <typename scalar_t, int TPR, int ITEMS, int VEC, int BLOCK, ZlprLabels L>
__global__ void __launch_bounds__(BLOCK) zlpr_rows_kernel(const scalar_t* __restrict__ x, ZlprArgs a,
                                                          scalar_t* __restrict__ loss, scalar_t* __restrict__ grad,
                                                          int64_t rows, int64_t d,
                                                          at::opmath_type<scalar_t> grad_scale) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem_a, smem_b;
  const int lane = threadIdx.x % TPR;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (BLOCK / TPR) + threadIdx.x / TPR;
  const bool valid = row < rows;
  ZlprTile<scalar_t, TPR, ITEMS, VEC, L> tile;
  tile.load(x, a, row, d, 0, d, lane, valid);
  acc_t mneg, sneg, mpos, spos;
  tile.template row_stats<TPR>(mneg, sneg, mpos, spos, smem_a, smem_b);
  if (valid && lane == 0) loss[row] = static_cast<scalar_t>(zlpr_term(mneg, sneg) + zlpr_term(mpos, spos));
  if (grad) {
    // 1 / (1 + sum) in the units of the shifted exponentials: e^{-m} / Z = 1 / (e^{-m} + s); grad_scale folded in
    // (as on the CPU: no separate pass, one rounding)
    tile.gradient(mneg, mpos, grad_scale / (exp(-mneg) + sneg), grad_scale / (exp(-mpos) + spos));
    tile_store<TPR, ITEMS, VEC>(tile.s, grad + row * d, d, lane, valid);
  }
}

// ---- split rows ------------------------------------------------------------------------------------------------

// Per chunk: maxima and the sums of exponentials relative to them, [rows, nchunks] each.
template <typename scalar_t, int VEC, ZlprLabels L>
__global__ void __launch_bounds__(kChunkThreads) zlpr_chunk_kernel(const scalar_t* __restrict__ x, ZlprArgs a,
                                                                   at::opmath_type<scalar_t>* __restrict__ part,
                                                                   int64_t rows, int64_t d, int64_t nchunks) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem_a, smem_b;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t len = d - c0 < kChunk ? d - c0 : kChunk;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    ZlprTile<scalar_t, kChunkThreads, kChunkItems, VEC, L> tile;
    tile.load(x, a, row, d, c0, len, threadIdx.x, true);
    acc_t mneg, sneg, mpos, spos;
    tile.template row_stats<kChunkThreads>(mneg, sneg, mpos, spos, smem_a, smem_b);
    if (threadIdx.x == 0) {
      acc_t* p = part + (row * nchunks + blockIdx.x) * 4;
      p[0] = mneg;
      p[1] = sneg;
      p[2] = mpos;
      p[3] = spos;
    }
  }
}

// Per row (one warp): merges the chunks (rescaling each sum to the row maximum, in a fixed order), writes the
// loss and the row statistics (m_neg, grad_scale / z_neg, m_pos, grad_scale / z_pos) for the gradient pass.
template <typename scalar_t>
__global__ void zlpr_merge_kernel(const at::opmath_type<scalar_t>* __restrict__ part,
                                  at::opmath_type<scalar_t>* __restrict__ stats, scalar_t* __restrict__ loss,
                                  int64_t rows, int64_t nchunks, at::opmath_type<scalar_t> grad_scale) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / kWarp) + threadIdx.x / kWarp;
  if (row >= rows) return;  // whole warps exit together
  const int lane = threadIdx.x % kWarp;
  const acc_t* p = part + row * nchunks * 4;
  acc_t mneg = 0, mpos = 0;
  for (int64_t k = lane; k < nchunks; k += kWarp) {
    mneg = MaxNaN()(mneg, p[4 * k]);
    mpos = MaxNaN()(mpos, p[4 * k + 2]);
  }
  mneg = row_allreduce<kWarp>(mneg, MaxNaN(), static_cast<acc_t*>(nullptr));
  mpos = row_allreduce<kWarp>(mpos, MaxNaN(), static_cast<acc_t*>(nullptr));
  acc_t sneg = 0, spos = 0;
  for (int64_t k = lane; k < nchunks; k += kWarp) {
    sneg += p[4 * k + 1] * exp(p[4 * k] - mneg);
    spos += p[4 * k + 3] * exp(p[4 * k + 2] - mpos);
  }
  sneg = row_allreduce<kWarp>(sneg, Sum(), static_cast<acc_t*>(nullptr));
  spos = row_allreduce<kWarp>(spos, Sum(), static_cast<acc_t*>(nullptr));
  if (lane == 0) {
    loss[row] = static_cast<scalar_t>(zlpr_term(mneg, sneg) + zlpr_term(mpos, spos));
    stats[4 * row] = mneg;
    stats[4 * row + 1] = grad_scale / (exp(-mneg) + sneg);
    stats[4 * row + 2] = mpos;
    stats[4 * row + 3] = grad_scale / (exp(-mpos) + spos);
  }
}

template <typename scalar_t, int VEC, ZlprLabels L>
__global__ void __launch_bounds__(kChunkThreads) zlpr_chunk_grad_kernel(
    const scalar_t* __restrict__ x, ZlprArgs a, const at::opmath_type<scalar_t>* __restrict__ stats,
    scalar_t* __restrict__ grad, int64_t rows, int64_t d) {
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t len = d - c0 < kChunk ? d - c0 : kChunk;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    ZlprTile<scalar_t, kChunkThreads, kChunkItems, VEC, L> tile;
    tile.load(x, a, row, d, c0, len, threadIdx.x, true);
    const auto* st = stats + 4 * row;
    tile.gradient(st[0], st[2], st[1], st[3]);
    tile_store<kChunkThreads, kChunkItems, VEC>(tile.s, grad + row * d + c0, len, threadIdx.x, true);
  }
}

// ---- cooperative chunks (coop.cuh): only when TORCHXC_CUDA_COOP_ABOVE asks for them -------------------------------

// Each block loads its chunk, publishes the chunk's maxima and sums (relative to its maxima) and, for the gradient,
// waits for the row's other chunks; then it merges them as zlpr_merge_kernel does and stores its chunk's gradient from
// the registers. The row's last block to arrive writes the loss (without the gradient, nobody waits).
// At least 4 blocks per SM (64 registers per thread), 2 for double soft labels (64 registers of values alone).
template <typename scalar_t, ZlprLabels L>
constexpr int zlpr_coop_min_blocks() {
  return sizeof(at::opmath_type<scalar_t>) == 8 && L == ZlprLabels::kSoft ? 2 : 4;
}

template <typename scalar_t, int VEC, ZlprLabels L>
__global__ void __launch_bounds__(kCoopThreads, zlpr_coop_min_blocks<scalar_t, L>()) zlpr_coop_kernel(
    const scalar_t* __restrict__ x, ZlprArgs a, at::opmath_type<scalar_t>* part, int* count,
    scalar_t* __restrict__ loss, scalar_t* __restrict__ grad, int64_t d, int nchunks,
    at::opmath_type<scalar_t> grad_scale) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem_a, smem_b;
  __shared__ int s_last;
  const auto [row, chunk, c0, len] = coop_task(nchunks, d);
  ZlprTile<scalar_t, kCoopThreads, kCoopItems, VEC, L> tile;
  tile.load(x, a, row, d, c0, len, threadIdx.x, true);
  acc_t mneg, sneg, mpos, spos;
  tile.template row_stats<kCoopThreads>(mneg, sneg, mpos, spos, smem_a, smem_b);
  acc_t* const q = part + row * nchunks * 4;
  if (threadIdx.x == 0) {
    q[4 * chunk] = mneg;
    q[4 * chunk + 1] = sneg;
    q[4 * chunk + 2] = mpos;
    q[4 * chunk + 3] = spos;
    s_last = coop_arrive(count + row, nchunks) == nchunks - 1;
    if (grad) coop_wait(count + row, nchunks);
  }
  __syncthreads();
  if (!grad && !s_last) return;  // uniform across the block
  // merge (as zlpr_merge_kernel): the maxima, then the sums rescaled to them
  acc_t Mneg = 0, Mpos = 0;
  for (int k = threadIdx.x; k < nchunks; k += kCoopThreads) {
    Mneg = MaxNaN()(Mneg, __ldcg(q + 4 * k));
    Mpos = MaxNaN()(Mpos, __ldcg(q + 4 * k + 2));
  }
  row_allreduce2<kCoopThreads>(Mneg, Mpos, MaxNaN(), MaxNaN(), smem_a.f, smem_b.f);
  acc_t Sneg = 0, Spos = 0;
  for (int k = threadIdx.x; k < nchunks; k += kCoopThreads) {
    Sneg += __ldcg(q + 4 * k + 1) * exp(__ldcg(q + 4 * k) - Mneg);
    Spos += __ldcg(q + 4 * k + 3) * exp(__ldcg(q + 4 * k + 2) - Mpos);
  }
  row_allreduce2<kCoopThreads>(Sneg, Spos, Sum(), Sum(), smem_a.f, smem_b.f);
  if (s_last && threadIdx.x == 0) loss[row] = static_cast<scalar_t>(zlpr_term(Mneg, Sneg) + zlpr_term(Mpos, Spos));
  if (!grad) return;
  tile.gradient(Mneg, Mpos, grad_scale / (exp(-Mneg) + Sneg), grad_scale / (exp(-Mpos) + Spos));
  tile_store<kCoopThreads, kCoopItems, VEC>(tile.s, grad + row * d + c0, len, threadIdx.x, true);
}

// Runs the cooperative chunk path and returns true, or returns false when the rows do not qualify.
template <typename scalar_t, int VEC, ZlprLabels L>
bool zlpr_coop_launch(const ZlprProblem& P, const ZlprArgs& a, const scalar_t* xp, scalar_t* lp, scalar_t* gp,
                      at::opmath_type<scalar_t> gs, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr auto K = &zlpr_coop_kernel<scalar_t, VEC, L>;
  if (!coop_fits<K>(P.rows, P.d, kCoopNever)) return false;  // slower than the register and split paths
  const int64_t nchunks = ceil_div(P.d, kCoopChunk);
  CoopScratch<acc_t> scratch(P.x, P.rows, 1, nchunks * 4, stream);
  K<<<static_cast<unsigned>(P.rows * nchunks), kCoopThreads, 0, stream>>>(xp, a, scratch.data, scratch.count, lp, gp,
                                                                          P.d, static_cast<int>(nchunks), gs);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

// ---- sparse positives to bitmask -------------------------------------------------------------------------------

__global__ void positives_to_bits_kernel(const int64_t* __restrict__ positives, uint32_t* __restrict__ bits,
                                         int64_t n, int64_t num_pos, int64_t d, int64_t words) {
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < n;
       k += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = positives[k];
    CUDA_KERNEL_ASSERT_MSG(j >= -1 && j < d, "torchxc::zlpr_loss_sparse: positive class index out of range");
    if (j >= 0) atomicOr(bits + (k / num_pos) * words + (j >> 5), 1u << (j & 31));  // duplicates: same bit
  }
}

// ---- host ---------------------------------------------------------------------------------------------------------

template <typename scalar_t, ZlprLabels L>
void zlpr_cuda_kernel(const ZlprProblem& P, const void* labels, int64_t words, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const ZlprArgs a{labels, P.mask.defined() ? P.mask.const_data_ptr<bool>() : nullptr, P.mask_per_row ? P.d : 0,
                   words};
  const int64_t rows = P.rows, d = P.d;
  const acc_t gs = static_cast<acc_t>(P.grad_scale);  // representable: ZlprProblem::make checked it
  const scalar_t* xp = P.x.const_data_ptr<scalar_t>();
  scalar_t* lp = P.loss.mutable_data_ptr<scalar_t>();
  scalar_t* gp = P.grad.numel() > 0 ? P.grad.mutable_data_ptr<scalar_t>() : nullptr;
  // Vector loads need every row start aligned: scores, gradient, and byte/float labels and mask.
  const void* label_ptr = L == ZlprLabels::kBits ? static_cast<const void*>(xp) : labels;
  auto aligned = [&](int vec) {
    return rows_aligned(d, vec, {xp, gp ? static_cast<const void*>(gp) : static_cast<const void*>(xp), label_ptr,
                                 a.mask ? static_cast<const void*>(a.mask) : static_cast<const void*>(xp)});
  };
  {
    constexpr int V = max_vec<scalar_t, kCoopItems>();
    const bool coop = aligned(V) ? zlpr_coop_launch<scalar_t, V, L>(P, a, xp, lp, gp, gs, stream)
                                 : zlpr_coop_launch<scalar_t, 1, L>(P, a, xp, lp, gp, gs, stream);
    if (coop) return;
  }
  constexpr int kWords = static_cast<int>(sizeof(acc_t) / 4) * (L == ZlprLabels::kSoft ? 2 : 1);
  const bool done = dispatch_row_config<kWords>(d, [&](auto cfg) {
    using C = decltype(cfg);
    constexpr int V = max_vec<scalar_t, C::ITEMS>();
    const dim3 grid(static_cast<unsigned>(ceil_div(rows, C::ROWS_PER_BLOCK)));
    if (aligned(V)) {
      zlpr_rows_kernel<scalar_t, C::TPR, C::ITEMS, V, C::BLOCK, L>
          <<<grid, C::BLOCK, 0, stream>>>(xp, a, lp, gp, rows, d, gs);
    } else {
      zlpr_rows_kernel<scalar_t, C::TPR, C::ITEMS, 1, C::BLOCK, L>
          <<<grid, C::BLOCK, 0, stream>>>(xp, a, lp, gp, rows, d, gs);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  });
  if (done) return;
  const int64_t nchunks = ceil_div(d, kChunk);
  const auto acc_opts = P.x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor part = at::empty({rows, nchunks, 4}, acc_opts);
  at::Tensor stats = at::empty({rows, 4}, acc_opts);
  const dim3 grid = chunk_row_grid(nchunks, rows);
  constexpr int V = 16 / sizeof(scalar_t);
  const bool vec = aligned(V);
  if (vec) {
    zlpr_chunk_kernel<scalar_t, V, L><<<grid, kChunkThreads, 0, stream>>>(xp, a, part.mutable_data_ptr<acc_t>(), rows,
                                                                          d, nchunks);
  } else {
    zlpr_chunk_kernel<scalar_t, 1, L><<<grid, kChunkThreads, 0, stream>>>(xp, a, part.mutable_data_ptr<acc_t>(), rows,
                                                                          d, nchunks);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  constexpr int kMergeThreads = 256;
  zlpr_merge_kernel<scalar_t>
      <<<static_cast<unsigned>(ceil_div(rows, kMergeThreads / kWarp)), kMergeThreads, 0, stream>>>(
          part.const_data_ptr<acc_t>(), stats.mutable_data_ptr<acc_t>(), lp, rows, nchunks, gs);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (!gp) return;
  if (vec) {
    zlpr_chunk_grad_kernel<scalar_t, V, L><<<grid, kChunkThreads, 0, stream>>>(xp, a, stats.const_data_ptr<acc_t>(),
                                                                               gp, rows, d);
  } else {
    zlpr_chunk_grad_kernel<scalar_t, 1, L><<<grid, kChunkThreads, 0, stream>>>(xp, a, stats.const_data_ptr<acc_t>(),
                                                                               gp, rows, d);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> zlpr_loss_cuda(const at::Tensor& input, const at::Tensor& target,
                                                  const c10::optional<at::Tensor>& mask, bool compute_grad,
                                                  double grad_scale) {
  constexpr const char* op = "torchxc::zlpr_loss";
  ZlprProblem P = ZlprProblem::make(input, target, mask, compute_grad, grad_scale, /*sparse=*/false, op);
  check_cuda_row_limits(P.rows, P.d, op);
  if (P.rows == 0) return {P.loss, P.grad};
  const c10::cuda::CUDAGuard guard(input.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "zlpr_loss_cuda", [&] {
    if (P.labels.scalar_type() == at::kBool) {
      zlpr_cuda_kernel<scalar_t, ZlprLabels::kHard>(P, P.labels.const_data_ptr<bool>(), 0, stream);
    } else {
      zlpr_cuda_kernel<scalar_t, ZlprLabels::kSoft>(P, P.labels.const_data_ptr<scalar_t>(), 0, stream);
    }
  });
  return {P.loss, P.grad};
}

std::tuple<at::Tensor, at::Tensor> zlpr_loss_sparse_cuda(const at::Tensor& input, const at::Tensor& positives,
                                                         const c10::optional<at::Tensor>& mask, bool compute_grad,
                                                         double grad_scale) {
  constexpr const char* op = "torchxc::zlpr_loss_sparse";
  ZlprProblem P = ZlprProblem::make(input, positives, mask, compute_grad, grad_scale, /*sparse=*/true, op);
  check_cuda_row_limits(P.rows, P.d, op);
  if (P.rows == 0) return {P.loss, P.grad};
  const c10::cuda::CUDAGuard guard(input.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t words = ceil_div(P.d, 32);
  at::Tensor bits = at::zeros({P.rows, words}, input.options().dtype(at::kInt));
  const int64_t n = P.labels.numel();
  if (n > 0) {
    const int threads = 256;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(ceil_div(n, threads), 65535));
    positives_to_bits_kernel<<<blocks, threads, 0, stream>>>(
        P.labels.const_data_ptr<int64_t>(), reinterpret_cast<uint32_t*>(bits.mutable_data_ptr<int>()), n,
        P.labels.size(-1), P.d, words);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "zlpr_loss_sparse_cuda", [&] {
    zlpr_cuda_kernel<scalar_t, ZlprLabels::kBits>(P, bits.const_data_ptr<int>(), words, stream);
  });
  return {P.loss, P.grad};
}

// Tiles of kScaleTile values of one row, taken by the blocks in turn: a tile whose row's incoming gradient equals
// grad_scale costs one cached read of that value and no gradient memory. The grid is capped, so that this is a few
// loop steps per block rather than a block per tile; and for the usual mean or sum (one incoming value for every
// row) each block reads that value once and returns, whatever the number of rows (short rows, e.g. the span rows of
// a GlobalPointer head, would otherwise make it a loop over millions of tiles).
constexpr int kScaleThreads = 256, kScaleTile = kScaleThreads * 16;

template <typename scalar_t>
__global__ void zlpr_scale_grad_kernel(scalar_t* __restrict__ g, const scalar_t* __restrict__ go, int64_t go_stride,
                                       int64_t rows, int64_t d, double grad_scale) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t tiles_per_row = (d + kScaleTile - 1) / kScaleTile;
  const acc_t scale = static_cast<acc_t>(grad_scale);
  // one value for every row (an expanded scalar: a mean or a sum): no tile needs a look when it is grad_scale
  if (go_stride == 0 && static_cast<acc_t>(go[0]) == scale) return;
  for (int64_t tile = blockIdx.x; tile < rows * tiles_per_row; tile += gridDim.x) {
    const int64_t r = tile / tiles_per_row;
    const acc_t w = static_cast<acc_t>(go[r * go_stride]);
    if (w == scale) continue;
    const acc_t f = w / scale;
    const int64_t c0 = (tile % tiles_per_row) * kScaleTile;
    const int64_t c1 = c0 + kScaleTile < d ? c0 + kScaleTile : d;
    scalar_t* row = g + r * d;
    for (int64_t c = c0 + threadIdx.x; c < c1; c += kScaleThreads) {
      row[c] = static_cast<scalar_t>(static_cast<acc_t>(row[c]) * f);
    }
  }
}

void zlpr_scale_grad_cuda(const at::Tensor& grad, const at::Tensor& grad_loss, double grad_scale) {
  const ZlprScaleProblem P = ZlprScaleProblem::make(grad, grad_loss, grad_scale);
  if (P.rows == 0 || P.d == 0) return;
  const c10::cuda::CUDAGuard guard(grad.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t tiles = P.rows * ceil_div(P.d, kScaleTile);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(tiles, 1024));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "zlpr_scale_grad_cuda", [&] {
    zlpr_scale_grad_kernel<scalar_t><<<blocks, kScaleThreads, 0, stream>>>(
        grad.mutable_data_ptr<scalar_t>(), P.go.const_data_ptr<scalar_t>(), P.go_stride, P.rows, P.d, grad_scale);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(torchxc, CUDA, m) {
  m.impl("zlpr_loss", &cuda::zlpr_loss_cuda);
  m.impl("zlpr_loss_sparse", &cuda::zlpr_loss_sparse_cuda);
  m.impl("_zlpr_scale_grad_", &cuda::zlpr_scale_grad_cuda);
}

}  // namespace torchxc
