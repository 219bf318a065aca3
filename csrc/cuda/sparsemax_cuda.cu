// CUDA kernels of sparsemax and sparsemax_backward (paths described in sparsemax_cuda.cuh; cooperative chunks:
// coop.cuh).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <type_traits>

#include "../common/sparsemax_common.h"
#include "coop.cuh"
#include "sparsemax_cuda.cuh"
#include "sparsemax_split.cuh"

namespace torchxc {
namespace cuda {
namespace {

// ---- forward, rows in registers --------------------------------------------------------------------------------

// Warp-per-row blocks of 128 threads on 32-bit values: at most 64 registers per thread, so that 8 blocks fit on
// an SM (70 registers allowed only 7, and 4096 rows of 1024 took 1.1 waves on an H200's 132 SMs).
template <typename scalar_t, int BLOCK>
constexpr int rows_min_blocks() {
  return BLOCK <= 128 && sizeof(at::opmath_type<scalar_t>) == 4 ? 8 : 1;
}

template <typename scalar_t, int TPR, int ITEMS, int VEC, int BLOCK>
__global__ void __launch_bounds__(BLOCK, rows_min_blocks<scalar_t, BLOCK>()) sparsemax_rows_kernel(const scalar_t* __restrict__ x,
                                                               scalar_t* __restrict__ y, int64_t rows, int64_t d,
                                                               int max_newton) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem;
  const int lane = threadIdx.x % TPR;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (BLOCK / TPR) + threadIdx.x / TPR;
  const bool valid = row < rows;
  acc_t u[ITEMS];
  acc_t m, t;
  if (tile_load_threshold<TPR, ITEMS, VEC, BLOCK>(u, x + row * d, d, lane, valid, smem, max_newton, &m, &t)) {
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      const acc_t p = u[i] - t;
      u[i] = p > acc_t(0) ? p : acc_t(0);
    }
  } else {
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) u[i] = quiet_nan<acc_t>();
  }
  tile_store<TPR, ITEMS, VEC>(u, y + row * d, d, lane, valid);
}

// ---- backward: g_in = s * (g - mean_s(g)), s = (p > 0) ------------------------------------------------------------

template <typename scalar_t, int TPR, int ITEMS, int VEC, int BLOCK>
__global__ void __launch_bounds__(BLOCK) sparsemax_backward_rows_kernel(const scalar_t* __restrict__ g,
                                                                        const scalar_t* __restrict__ p,
                                                                        scalar_t* __restrict__ out, int64_t rows,
                                                                        int64_t d) {
  using acc_t = at::opmath_type<scalar_t>;
  static_assert(ITEMS <= 32, "support masks are 32-bit");
  __shared__ RowSmem<acc_t> smem;
  const int lane = threadIdx.x % TPR;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (BLOCK / TPR) + threadIdx.x / TPR;
  const bool valid = row < rows;
  acc_t v[ITEMS];
  tile_load<TPR, ITEMS, VEC>(v, p + row * d, d, lane, valid, acc_t(0));
  uint32_t support = 0, nan = 0;  // keep only two bits of p per value: registers hold g
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    support |= uint32_t(v[i] > acc_t(0)) << i;
    nan |= uint32_t(v[i] != v[i]) << i;
  }
  tile_load<TPR, ITEMS, VEC>(v, g + row * d, d, lane, valid, acc_t(0));
  acc_t s = 0;
  int c = 0;
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    const bool in = (support >> i) & 1u;
    s += in ? v[i] : acc_t(0);
    c += in;
  }
  row_allreduce_sum_count<TPR>(s, c, smem);
  const acc_t mean = s / static_cast<acc_t>(c);
#pragma unroll
  for (int i = 0; i < ITEMS; ++i) {
    v[i] = ((support >> i) & 1u) ? v[i] - mean : (((nan >> i) & 1u) ? quiet_nan<acc_t>() : acc_t(0));
  }
  tile_store<TPR, ITEMS, VEC>(v, out + row * d, d, lane, valid);
}

// Split backward, pass 1: per-chunk sum of g over the support and its size.
template <typename scalar_t>
__global__ void __launch_bounds__(kChunkThreads) sparsemax_backward_partial_kernel(
    const scalar_t* __restrict__ g, const scalar_t* __restrict__ p, at::opmath_type<scalar_t>* __restrict__ part_sum,
    int* __restrict__ part_count, int64_t rows, int64_t d, int64_t nchunks) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const scalar_t* pr = p + row * d + c0;
    const scalar_t* gr = g + row * d + c0;
    acc_t s = 0;
    int c = 0;
    for (int64_t j = threadIdx.x; j < kChunk && c0 + j < d; j += kChunkThreads) {
      const bool in = static_cast<acc_t>(pr[j]) > acc_t(0);
      s += in ? static_cast<acc_t>(gr[j]) : acc_t(0);
      c += in;
    }
    row_allreduce_sum_count<kChunkThreads>(s, c, smem);
    if (threadIdx.x == 0) {
      part_sum[row * nchunks + blockIdx.x] = s;
      part_count[row * nchunks + blockIdx.x] = c;
    }
  }
}

// Split backward, pass 2: every block reduces its row's partials (fixed order: deterministic) and writes its chunk.
template <typename scalar_t>
__global__ void __launch_bounds__(kChunkThreads) sparsemax_backward_write_kernel(
    const scalar_t* __restrict__ g, const scalar_t* __restrict__ p, const at::opmath_type<scalar_t>* __restrict__ part_sum,
    const int* __restrict__ part_count, scalar_t* __restrict__ out, int64_t rows, int64_t d, int64_t nchunks) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    acc_t s = 0;
    int c = 0;
    for (int64_t k = threadIdx.x; k < nchunks; k += kChunkThreads) {
      s += part_sum[row * nchunks + k];
      c += part_count[row * nchunks + k];
    }
    row_allreduce_sum_count<kChunkThreads>(s, c, smem);
    const acc_t mean = s / static_cast<acc_t>(c);
    const int64_t off = row * d + c0;
    for (int64_t j = threadIdx.x; j < kChunk && c0 + j < d; j += kChunkThreads) {
      const acc_t pj = static_cast<acc_t>(p[off + j]);
      const acc_t v = pj > acc_t(0) ? static_cast<acc_t>(g[off + j]) - mean : (pj == pj ? acc_t(0) : quiet_nan<acc_t>());
      out[off + j] = static_cast<scalar_t>(v);
    }
  }
}

// ---- cooperative chunks (coop.cuh): the float32 backward of rows over 16384; the rest on request ------------------

// Forward: the split path's three steps in one kernel, the chunk's values kept in registers. (1) Each chunk finds its
// maximum m_c and its own threshold tau_c and publishes them. Once all chunks of the row have, (2) each block reduces
// them to the row maximum M and the lower bound L = max_c (m_c + tau_c) - M of tau - M (sparsemax_split.cuh), and
// writes its values above L - margin (a superset of the support) into its chunk of the output, which serves as its
// candidate list; the row's last block runs the exact search over all lists and publishes t. (3) Every block writes
// max(x - M - t, 0) over its chunk.
// At least 4 blocks per SM (64 registers per thread) on 32-bit values, 2 on double.
template <typename scalar_t>
constexpr int coop_min_blocks() {
  return sizeof(at::opmath_type<scalar_t>) == 8 ? 2 : 4;
}

template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kCoopThreads, coop_min_blocks<scalar_t>()) sparsemax_coop_kernel(
    const scalar_t* __restrict__ x, scalar_t* y, at::opmath_type<scalar_t>* part, int* count, int64_t d, int nchunks,
    int max_newton) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem;
  __shared__ int scan[kCoopThreads / kWarp];
  __shared__ acc_t s_t;
  __shared__ int s_last;
  const auto [row, chunk, c0, len] = coop_task(nchunks, d);
  acc_t* const q = part + row * (3 * nchunks + 1);  // per chunk: m_c, tau_c, candidate count; then the row's t
  acc_t v[kCoopItems];
  tile_load<kCoopThreads, kCoopItems, VEC>(v, x + row * d + c0, len, threadIdx.x, true, neg_inf<acc_t>());
  {
    const acc_t m = tile_max<kCoopThreads>(v, smem);
    acc_t t = quiet_nan<acc_t>();
    if (isfinite(m)) {  // uniform across the block
      acc_t u[kCoopItems];
#pragma unroll
      for (int i = 0; i < kCoopItems; ++i) u[i] = v[i] - m;
      t = tile_threshold<kCoopThreads, kCoopItems, kCoopThreads>(u, smem, max_newton);
    }
    if (threadIdx.x == 0) {
      q[3 * chunk] = m;
      q[3 * chunk + 1] = t;
      coop_arrive(count + 2 * row, nchunks);
      coop_wait(count + 2 * row, nchunks);
    }
    __syncthreads();
  }
  acc_t M = neg_inf<acc_t>();
  for (int k = threadIdx.x; k < nchunks; k += kCoopThreads) M = MaxNaN()(M, __ldcg(q + 3 * k));
  M = row_allreduce<kCoopThreads>(M, MaxNaN(), smem.f);
  scalar_t* const out = y + row * d + c0;
  if (!isfinite(M)) {  // uniform across the row: NaN output, no candidates, no second wait
#pragma unroll
    for (int i = 0; i < kCoopItems; ++i) v[i] = quiet_nan<acc_t>();
    tile_store<kCoopThreads, kCoopItems, VEC>(v, out, len, threadIdx.x, true);
    return;
  }
  acc_t L = neg_inf<acc_t>();
  for (int k = threadIdx.x; k < nchunks; k += kCoopThreads) {
    const acc_t mk = __ldcg(q + 3 * k);
    if (isfinite(mk)) {
      const acc_t l = (mk - M) + __ldcg(q + 3 * k + 1);
      L = l > L ? l : L;
    }
  }
  L = row_allreduce<kCoopThreads>(L, MaxNaN(), smem.f);
  const acc_t lower = L - split_margin<acc_t>();
  uint32_t keep = 0;
  int n = 0;
#pragma unroll
  for (int i = 0; i < kCoopItems; ++i) {
    const bool k = v[i] - M > lower;
    keep |= uint32_t(k) << i;
    n += k;
  }
  int total;
  int pos = block_exclusive_scan<kCoopThreads>(n, scan, &total);
#pragma unroll
  for (int i = 0; i < kCoopItems; ++i) {
    if ((keep >> i) & 1u) out[pos++] = static_cast<scalar_t>(v[i]);  // exact: v came from scalar_t
  }
  __syncthreads();  // the block's candidates are written before thread 0 announces them
  acc_t* const row_t = q + 3 * nchunks;
  if (threadIdx.x == 0) {
    q[3 * chunk + 2] = static_cast<acc_t>(total);  // exact: at most kCoopChunk
    s_last = coop_arrive(count + 2 * row + 1, nchunks) == nchunks - 1;
  }
  __syncthreads();
  if (s_last) {  // the exact search over every chunk's candidates, a warp per list (as sparsemax_solve_kernel)
    const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
    const scalar_t* base = y + row * d;
    auto sum_above = [&](acc_t t, bool) -> SumCount<acc_t> {
      acc_t s = 0;
      int c = 0;
      for (int k = warp; k < nchunks; k += kCoopThreads / kWarp) {
        const int nk = static_cast<int>(__ldcg(q + 3 * k + 2));
        const scalar_t* list = base + static_cast<int64_t>(k) * kCoopChunk;
        for (int j = lane; j < nk; j += kWarp) {
          const acc_t u = static_cast<acc_t>(load_cg(list + j)) - M;
          const bool in = u > t;
          s += in ? u - t : acc_t(0);
          c += in;
        }
      }
      row_allreduce_sum_count<kCoopThreads>(s, c, smem);
      return {s, c};
    };
    const acc_t t = sparsemax_threshold<acc_t>(sum_above, max_newton);
    if (threadIdx.x == 0) {
      s_t = t;
      *row_t = t;
      coop_arrive(count + 2 * row + 1, nchunks);  // nchunks + 1: t is ready, the lists may be overwritten
    }
  } else if (threadIdx.x == 0) {
    coop_wait(count + 2 * row + 1, nchunks + 1);
    s_t = __ldcg(row_t);
  }
  __syncthreads();
  const acc_t t = s_t;
#pragma unroll
  for (int i = 0; i < kCoopItems; ++i) {
    const acc_t p = (v[i] - M) - t;
    v[i] = p > acc_t(0) ? p : acc_t(0);
  }
  tile_store<kCoopThreads, kCoopItems, VEC>(v, out, len, threadIdx.x, true);
}

// Backward: each chunk sums g over its support and counts it; once all chunks of the row have published, every block
// reduces them (fixed order) to the mean and writes its chunk from the registers.
template <typename scalar_t, int VEC>
__global__ void __launch_bounds__(kCoopThreads, coop_min_blocks<scalar_t>()) sparsemax_backward_coop_kernel(
    const scalar_t* __restrict__ g, const scalar_t* __restrict__ p, scalar_t* __restrict__ out,
    at::opmath_type<scalar_t>* part, int* count, int64_t d, int nchunks) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem;
  const auto [row, chunk, c0, len] = coop_task(nchunks, d);
  const int64_t off = row * d + c0;
  acc_t v[kCoopItems];
  tile_load<kCoopThreads, kCoopItems, VEC>(v, p + off, len, threadIdx.x, true, acc_t(0));
  uint32_t support = 0, nan = 0;
#pragma unroll
  for (int i = 0; i < kCoopItems; ++i) {
    support |= uint32_t(v[i] > acc_t(0)) << i;
    nan |= uint32_t(v[i] != v[i]) << i;
  }
  tile_load<kCoopThreads, kCoopItems, VEC>(v, g + off, len, threadIdx.x, true, acc_t(0));
  acc_t s = 0;
  int c = 0;
#pragma unroll
  for (int i = 0; i < kCoopItems; ++i) {
    const bool in = (support >> i) & 1u;
    s += in ? v[i] : acc_t(0);
    c += in;
  }
  row_allreduce_sum_count<kCoopThreads>(s, c, smem);
  acc_t* const q = part + row * nchunks * 2;  // per chunk: sum, count (exact: at most kCoopChunk)
  if (threadIdx.x == 0) {
    q[2 * chunk] = s;
    q[2 * chunk + 1] = static_cast<acc_t>(c);
    coop_arrive(count + row, nchunks);
    coop_wait(count + row, nchunks);
  }
  __syncthreads();
  s = 0;
  c = 0;
  for (int k = threadIdx.x; k < nchunks; k += kCoopThreads) {
    s += __ldcg(q + 2 * k);
    c += static_cast<int>(__ldcg(q + 2 * k + 1));
  }
  row_allreduce_sum_count<kCoopThreads>(s, c, smem);
  const acc_t mean = s / static_cast<acc_t>(c);
#pragma unroll
  for (int i = 0; i < kCoopItems; ++i) {
    v[i] = ((support >> i) & 1u) ? v[i] - mean : (((nan >> i) & 1u) ? quiet_nan<acc_t>() : acc_t(0));
  }
  tile_store<kCoopThreads, kCoopItems, VEC>(v, out + off, len, threadIdx.x, true);
}

template <typename scalar_t, int VEC>
bool sparsemax_coop_forward(const scalar_t* xp, scalar_t* yp, const at::Tensor& like, int64_t rows, int64_t d,
                            int max_newton, cudaStream_t stream) {
  constexpr auto K = &sparsemax_coop_kernel<scalar_t, VEC>;
  if (!coop_fits<K>(rows, d, kCoopNever)) return false;  // slower than the register and split paths
  const int64_t nchunks = ceil_div(d, kCoopChunk);
  CoopScratch<at::opmath_type<scalar_t>> scratch(like, rows, 2, 3 * nchunks + 1, stream);
  K<<<static_cast<unsigned>(rows * nchunks), kCoopThreads, 0, stream>>>(xp, yp, scratch.data, scratch.count, d,
                                                                        static_cast<int>(nchunks), max_newton);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

template <typename scalar_t, int VEC>
bool sparsemax_coop_backward(const scalar_t* gp, const scalar_t* pp, scalar_t* op, const at::Tensor& like,
                             int64_t rows, int64_t d, cudaStream_t stream) {
  constexpr auto K = &sparsemax_backward_coop_kernel<scalar_t, VEC>;
  // float32 rows of 32768 and more: 0.75-0.97x the register and split paths' time (coop.cuh); not 16-bit types
  if (!coop_fits<K>(rows, d, std::is_same_v<scalar_t, float> ? 16384 : kCoopNever)) return false;
  const int64_t nchunks = ceil_div(d, kCoopChunk);
  CoopScratch<at::opmath_type<scalar_t>> scratch(like, rows, 1, 2 * nchunks, stream);
  K<<<static_cast<unsigned>(rows * nchunks), kCoopThreads, 0, stream>>>(gp, pp, op, scratch.data, scratch.count, d,
                                                                        static_cast<int>(nchunks));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

// ---- host ---------------------------------------------------------------------------------------------------------

template <typename scalar_t>
void sparsemax_forward_cuda_kernel(const at::Tensor& x, at::Tensor& y, int64_t rows, int64_t d, int max_newton,
                                   cudaStream_t stream) {
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
  constexpr int VC = max_vec<scalar_t, kCoopItems>();
  if (rows_aligned(d, VC, {xp, yp}) ? sparsemax_coop_forward<scalar_t, VC>(xp, yp, x, rows, d, max_newton, stream)
                                    : sparsemax_coop_forward<scalar_t, 1>(xp, yp, x, rows, d, max_newton, stream)) {
    return;
  }
  constexpr int kWords = sizeof(at::opmath_type<scalar_t>) / 4;
  const bool done = dispatch_row_config<kWords>(d, [&](auto cfg) {
    using C = decltype(cfg);
    constexpr int V = max_vec<scalar_t, C::ITEMS>();
    const dim3 grid(static_cast<unsigned>(ceil_div(rows, C::ROWS_PER_BLOCK)));
    if (rows_aligned(d, V, {xp, yp})) {
      sparsemax_rows_kernel<scalar_t, C::TPR, C::ITEMS, V, C::BLOCK>
          <<<grid, C::BLOCK, 0, stream>>>(xp, yp, rows, d, max_newton);
    } else {
      sparsemax_rows_kernel<scalar_t, C::TPR, C::ITEMS, 1, C::BLOCK>
          <<<grid, C::BLOCK, 0, stream>>>(xp, yp, rows, d, max_newton);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  });
  if (done) return;
  // Split rows: the output doubles as the candidate buffer.
  SplitThreshold<scalar_t> split(x, rows, d, max_newton, stream);
  split.run(xp, yp);
  sparsemax_split_write_kernel<scalar_t><<<chunk_row_grid(split.nchunks, rows), kChunkThreads, 0, stream>>>(
      xp, split.row_max(), split.row_tau(), yp, rows, d);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void sparsemax_backward_cuda_kernel(const at::Tensor& g, const at::Tensor& p, at::Tensor& out, int64_t rows,
                                    int64_t d, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* gp = g.const_data_ptr<scalar_t>();
  const scalar_t* pp = p.const_data_ptr<scalar_t>();
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  constexpr int VC = max_vec<scalar_t, kCoopItems>();
  if (rows_aligned(d, VC, {gp, pp, op}) ? sparsemax_coop_backward<scalar_t, VC>(gp, pp, op, g, rows, d, stream)
                                        : sparsemax_coop_backward<scalar_t, 1>(gp, pp, op, g, rows, d, stream)) {
    return;
  }
  constexpr int kWords = sizeof(acc_t) / 4;
  const bool done = dispatch_row_config<kWords>(d, [&](auto cfg) {
    using C = decltype(cfg);
    constexpr int V = max_vec<scalar_t, C::ITEMS>();
    const dim3 grid(static_cast<unsigned>(ceil_div(rows, C::ROWS_PER_BLOCK)));
    if (rows_aligned(d, V, {gp, pp, op})) {
      sparsemax_backward_rows_kernel<scalar_t, C::TPR, C::ITEMS, V, C::BLOCK>
          <<<grid, C::BLOCK, 0, stream>>>(gp, pp, op, rows, d);
    } else {
      sparsemax_backward_rows_kernel<scalar_t, C::TPR, C::ITEMS, 1, C::BLOCK>
          <<<grid, C::BLOCK, 0, stream>>>(gp, pp, op, rows, d);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  });
  if (done) return;
  const int64_t nchunks = ceil_div(d, kChunk);
  at::Tensor part_sum = at::empty({rows, nchunks}, g.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  at::Tensor part_count = at::empty({rows, nchunks}, g.options().dtype(at::kInt));
  const dim3 grid = chunk_row_grid(nchunks, rows);
  sparsemax_backward_partial_kernel<scalar_t><<<grid, kChunkThreads, 0, stream>>>(
      gp, pp, part_sum.mutable_data_ptr<acc_t>(), part_count.mutable_data_ptr<int>(), rows, d, nchunks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  sparsemax_backward_write_kernel<scalar_t><<<grid, kChunkThreads, 0, stream>>>(
      gp, pp, part_sum.const_data_ptr<acc_t>(), part_count.const_data_ptr<int>(), op, rows, d, nchunks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor sparsemax_cuda(const at::Tensor& input, int64_t dim) {
  constexpr const char* op = "torchxc::sparsemax";
  check_float_input(input, op, "input");
  const c10::cuda::CUDAGuard guard(input.device());
  const RowLayout L = RowLayout::make(input, dim, op);
  at::Tensor out = at::empty({L.rows, L.d}, L.rows2d.options());
  check_cuda_row_limits(L.rows, L.d, op);
  if (L.rows > 0) {
    const int max_newton = sparsemax_max_newton();
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "sparsemax_cuda", [&] {
      sparsemax_forward_cuda_kernel<scalar_t>(L.rows2d, out, L.rows, L.d, max_newton, stream);
    });
  }
  return L.unflatten(out);
}

at::Tensor sparsemax_backward_cuda(const at::Tensor& grad_output, const at::Tensor& output, int64_t dim) {
  constexpr const char* op = "torchxc::sparsemax_backward";
  check_sparsemax_backward_inputs(grad_output, output, op);
  const c10::cuda::CUDAGuard guard(output.device());
  const RowLayout P = RowLayout::make(output, dim, op);
  const RowLayout G = RowLayout::make(grad_output, dim, op);
  at::Tensor out = at::empty({P.rows, P.d}, P.rows2d.options());
  check_cuda_row_limits(P.rows, P.d, op);
  if (P.rows > 0) {
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), "sparsemax_backward_cuda", [&] {
      sparsemax_backward_cuda_kernel<scalar_t>(G.rows2d, P.rows2d, out, P.rows, P.d, stream);
    });
  }
  return P.unflatten(out);
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(torchxc, CUDA, m) {
  m.impl("sparsemax", &cuda::sparsemax_cuda);
  m.impl("sparsemax_backward", &cuda::sparsemax_backward_cuda);
}

}  // namespace torchxc
