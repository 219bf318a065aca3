// Split-row path of the sparsemax threshold: rows too long for one block's registers (d > 32768, e.g. 1M labels).
//
//   1. chunk_threshold: each chunk of 8192 values (one block) computes its maximum m_c and its own sparsemax
//      threshold tau_c. Since f_row(t) >= f_chunk(t), the row's tau is >= every tau_c.
//   2. collect: every block reduces its row's chunk results to M = max m_c and L = max tau_c - M, and copies the
//      values with x - M > L - margin (a superset of the support; usually a few hundred values per row) into
//      the candidate buffer at its chunk's offset, in a fixed order.
//   3. solve: one block per row runs the exact search (sparsemax_threshold.h) over the candidates, one warp per
//      chunk list.
// The caller then writes its output (forward: max(x - M - t, 0); loss: its own epilogue).
#pragma once

#include <ATen/ATen.h>

#include "sparsemax_cuda.cuh"

namespace torchxc {
namespace cuda {

// Rounding slack for the chunk lower bound: a looser bound only adds candidates, never loses one.
template <typename acc_t>
constexpr acc_t split_margin() {
  return sizeof(acc_t) == 4 ? acc_t(1e-4) : acc_t(1e-12);
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kChunkThreads) sparsemax_chunk_threshold_kernel(
    const scalar_t* __restrict__ x, at::opmath_type<scalar_t>* __restrict__ chunk_m,
    at::opmath_type<scalar_t>* __restrict__ chunk_t, int64_t rows, int64_t d, int64_t nchunks, int max_newton) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t len = d - c0 < kChunk ? d - c0 : kChunk;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    acc_t u[kChunkItems];
    acc_t m, t;
    tile_load_threshold<kChunkThreads, kChunkItems, VEC, kChunkThreads>(u, x + row * d + c0, len, threadIdx.x, true, smem,
                                                         max_newton, &m, &t);
    if (threadIdx.x == 0) {
      chunk_m[row * nchunks + blockIdx.x] = m;
      chunk_t[row * nchunks + blockIdx.x] = t;
    }
  }
}

// Row maximum M (NaN-propagating) and the largest chunk threshold relative to M.
template <typename acc_t>
__device__ __forceinline__ void split_row_bounds(const acc_t* __restrict__ chunk_m, const acc_t* __restrict__ chunk_t,
                                                 int64_t nchunks, RowSmem<acc_t>& smem, acc_t* M, acc_t* L) {
  acc_t m = neg_inf<acc_t>();
  for (int64_t k = threadIdx.x; k < nchunks; k += blockDim.x) m = MaxNaN()(m, chunk_m[k]);
  m = row_allreduce<kChunkThreads>(m, MaxNaN(), smem.f);
  acc_t l = neg_inf<acc_t>();
  if (isfinite(m)) {
    for (int64_t k = threadIdx.x; k < nchunks; k += blockDim.x) {
      const acc_t mk = chunk_m[k];
      if (isfinite(mk)) {
        const acc_t v = (mk - m) + chunk_t[k];
        l = v > l ? v : l;
      }
    }
  }
  l = row_allreduce<kChunkThreads>(l, MaxNaN(), smem.f);
  *M = m;
  *L = l;
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kChunkThreads) sparsemax_collect_kernel(
    const scalar_t* __restrict__ x, const at::opmath_type<scalar_t>* __restrict__ chunk_m,
    const at::opmath_type<scalar_t>* __restrict__ chunk_t, scalar_t* __restrict__ cand, int* __restrict__ cand_count,
    at::opmath_type<scalar_t>* __restrict__ row_max, int64_t rows, int64_t d, int64_t nchunks) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem;
  __shared__ int scan[kChunkThreads / kWarp];
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  const int64_t len = d - c0 < kChunk ? d - c0 : kChunk;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    acc_t M, L;
    split_row_bounds(chunk_m + row * nchunks, chunk_t + row * nchunks, nchunks, smem, &M, &L);
    if (blockIdx.x == 0 && threadIdx.x == 0) row_max[row] = M;
    if (!isfinite(M)) {  // uniform: the row's output is NaN, nothing to collect
      if (threadIdx.x == 0) cand_count[row * nchunks + blockIdx.x] = 0;
      continue;
    }
    const acc_t lower = L - split_margin<acc_t>();
    acc_t v[kChunkItems];
    tile_load<kChunkThreads, kChunkItems, VEC>(v, x + row * d + c0, len, threadIdx.x, true, neg_inf<acc_t>());
    uint32_t keep = 0;
    int n = 0;
#pragma unroll
    for (int i = 0; i < kChunkItems; ++i) {
      const bool k = v[i] - M > lower;
      keep |= uint32_t(k) << i;
      n += k;
    }
    int total;
    int pos = block_exclusive_scan<kChunkThreads>(n, scan, &total);
    scalar_t* out = cand + row * d + c0;
#pragma unroll
    for (int i = 0; i < kChunkItems; ++i) {
      if ((keep >> i) & 1u) out[pos++] = static_cast<scalar_t>(v[i]);  // exact: v came from scalar_t
    }
    if (threadIdx.x == 0) cand_count[row * nchunks + blockIdx.x] = total;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kSolveThreads) sparsemax_solve_kernel(
    const scalar_t* __restrict__ cand, const int* __restrict__ cand_count,
    const at::opmath_type<scalar_t>* __restrict__ row_max, at::opmath_type<scalar_t>* __restrict__ row_tau,
    int64_t d, int64_t nchunks, int max_newton) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem;
  const int64_t row = blockIdx.x;
  const acc_t M = row_max[row];
  if (!isfinite(M)) {
    if (threadIdx.x == 0) row_tau[row] = quiet_nan<acc_t>();
    return;
  }
  const int* counts = cand_count + row * nchunks;
  const scalar_t* base = cand + row * d;
  // Each warp takes every (kSolveThreads / 32)-th chunk list: the lists are short (often a few values), and a
  // block walking them one after the other waited one memory latency per chunk (128 per step for 1M values).
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  auto sum_above = [&](acc_t t, bool) -> SumCount<acc_t> {
    acc_t s = 0;
    int c = 0;
    for (int64_t k = warp; k < nchunks; k += kSolveThreads / kWarp) {
      const int n = counts[k];
      const scalar_t* list = base + k * kChunk;
#pragma unroll 4
      for (int j = lane; j < n; j += kWarp) {
        const acc_t u = static_cast<acc_t>(list[j]) - M;
        const bool keep = u > t;
        s += keep ? u - t : acc_t(0);
        c += keep;
      }
    }
    row_allreduce_sum_count<kSolveThreads>(s, c, smem);
    return {s, c};
  };
  const acc_t t = sparsemax_threshold<acc_t>(sum_above, max_newton);
  if (threadIdx.x == 0) row_tau[row] = t;
}

template <typename scalar_t>
__global__ void __launch_bounds__(kChunkThreads) sparsemax_split_write_kernel(
    const scalar_t* __restrict__ x, const at::opmath_type<scalar_t>* __restrict__ row_max,
    const at::opmath_type<scalar_t>* __restrict__ row_tau, scalar_t* __restrict__ y, int64_t rows, int64_t d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const acc_t M = row_max[row];
    const acc_t t = row_tau[row];
    const bool finite = isfinite(M);
    const int64_t off = row * d + c0;
    for (int64_t j = threadIdx.x; j < kChunk && c0 + j < d; j += kChunkThreads) {
      const acc_t p = (static_cast<acc_t>(x[off + j]) - M) - t;
      y[off + j] = static_cast<scalar_t>(finite ? (p > acc_t(0) ? p : acc_t(0)) : quiet_nan<acc_t>());
    }
  }
}

// Host side: runs steps 1-3 on the current stream; afterwards row_max()/row_tau() hold M and t = tau - M.
template <typename scalar_t>
struct SplitThreshold {
  using acc_t = at::opmath_type<scalar_t>;
  int64_t rows, d, nchunks;
  int max_newton;
  cudaStream_t stream;
  at::Tensor chunk_m, chunk_t, counts, rmax, rtau;

  SplitThreshold(const at::Tensor& like, int64_t rows_, int64_t d_, int max_newton_, cudaStream_t stream_)
      : rows(rows_), d(d_), nchunks(ceil_div(d_, kChunk)), max_newton(max_newton_), stream(stream_) {
    // one finishing block per row (reachable with TORCHXC_CUDA_SPLIT_ABOVE set low): checked before any launch
    TORCH_CHECK(rows < (int64_t(1) << 31) - 1, "torchxc: the split sparsemax path supports up to 2^31 - 2 rows, got ",
                rows);
    const auto acc_opts = like.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
    chunk_m = at::empty({rows, nchunks}, acc_opts);
    chunk_t = at::empty({rows, nchunks}, acc_opts);
    counts = at::empty({rows, nchunks}, like.options().dtype(at::kInt));
    rmax = at::empty({rows}, acc_opts);
    rtau = at::empty({rows}, acc_opts);
  }

  // `cand` is a scratch buffer of rows * d values (the forward uses its output).
  void run(const scalar_t* x, scalar_t* cand) {
    constexpr int V = 16 / sizeof(scalar_t);
    const dim3 grid = chunk_row_grid(nchunks, rows);
    if (rows_aligned(d, V, {x})) {
      sparsemax_chunk_threshold_kernel<scalar_t, V><<<grid, kChunkThreads, 0, stream>>>(
          x, chunk_m.mutable_data_ptr<acc_t>(), chunk_t.mutable_data_ptr<acc_t>(), rows, d, nchunks, max_newton);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      sparsemax_collect_kernel<scalar_t, V><<<grid, kChunkThreads, 0, stream>>>(
          x, chunk_m.const_data_ptr<acc_t>(), chunk_t.const_data_ptr<acc_t>(), cand, counts.mutable_data_ptr<int>(),
          rmax.mutable_data_ptr<acc_t>(), rows, d, nchunks);
    } else {
      sparsemax_chunk_threshold_kernel<scalar_t, 1><<<grid, kChunkThreads, 0, stream>>>(
          x, chunk_m.mutable_data_ptr<acc_t>(), chunk_t.mutable_data_ptr<acc_t>(), rows, d, nchunks, max_newton);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      sparsemax_collect_kernel<scalar_t, 1><<<grid, kChunkThreads, 0, stream>>>(
          x, chunk_m.const_data_ptr<acc_t>(), chunk_t.const_data_ptr<acc_t>(), cand, counts.mutable_data_ptr<int>(),
          rmax.mutable_data_ptr<acc_t>(), rows, d, nchunks);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    sparsemax_solve_kernel<scalar_t><<<static_cast<unsigned>(rows), kSolveThreads, 0, stream>>>(
        cand, counts.const_data_ptr<int>(), rmax.const_data_ptr<acc_t>(), rtau.mutable_data_ptr<acc_t>(), d, nchunks,
        max_newton);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  const acc_t* row_max() const { return rmax.const_data_ptr<acc_t>(); }
  const acc_t* row_tau() const { return rtau.const_data_ptr<acc_t>(); }
};

}  // namespace cuda
}  // namespace torchxc
