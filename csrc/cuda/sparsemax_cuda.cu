// CUDA kernels of sparsemax and sparsemax_backward (paths described in sparsemax_cuda.cuh).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/sparsemax_common.h"
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

// ---- host ---------------------------------------------------------------------------------------------------------

template <typename scalar_t>
void sparsemax_forward_cuda_kernel(const at::Tensor& x, at::Tensor& y, int64_t rows, int64_t d, int max_newton,
                                   cudaStream_t stream) {
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  scalar_t* yp = y.mutable_data_ptr<scalar_t>();
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
