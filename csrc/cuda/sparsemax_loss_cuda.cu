// CUDA kernels of sparsemax_loss and sparsemax_loss_backward.
//
// Per row: L = sum_j 1/2 (p_j - q_j)^2 + q_j max(tau - z_j, 0), p = sparsemax(z), q = e_y or w / sum(w)
// (see python/torchxc/sparsemax.py). The threshold comes from the same register/split paths as the forward;
// the loss is an epilogue over the values still in registers. The backward is elementwise given the saved row
// statistics (max, tau - max, target mass).
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

template <typename acc_t>
__device__ __forceinline__ acc_t loss_term(acc_t u, acc_t t, acc_t q) {
  acc_t p = u - t;
  p = p > acc_t(0) ? p : acc_t(0);
  const acc_t dlt = p - q;
  const acc_t gap = t - u;
  return acc_t(0.5) * dlt * dlt + ((q > acc_t(0) && gap > acc_t(0)) ? q * gap : acc_t(0));  // q = 0 skips -inf
}

__device__ __forceinline__ void check_label(int64_t y, int64_t d, int64_t ignore_index) {
  CUDA_KERNEL_ASSERT_MSG(y == ignore_index || (y >= 0 && y < d),
                         "torchxc::sparsemax_loss: target class index out of range");
}

template <typename acc_t>
__device__ __forceinline__ void check_weight(acc_t w) {
  CUDA_KERNEL_ASSERT_MSG(w >= acc_t(0) && w < std::numeric_limits<acc_t>::infinity(),
                         "torchxc::sparsemax_loss: label weights must be finite and non-negative");
}

// A row's weights are divided by their sum: it and its reciprocal must be finite (as the CPU kernel checks).
template <typename acc_t>
__device__ __forceinline__ acc_t checked_mass(acc_t mass) {
  const acc_t inf = std::numeric_limits<acc_t>::infinity();
  CUDA_KERNEL_ASSERT_MSG(mass == acc_t(0) || (mass < inf && acc_t(1) / mass < inf),
                         "torchxc::sparsemax_loss: label weights whose row sum cannot be normalised in the input's "
                         "dtype (rescale them)");
  return mass;
}

template <typename scalar_t, int TPR, int ITEMS, int VEC, int BLOCK, bool kIndex>
__global__ void __launch_bounds__(BLOCK) sparsemax_loss_rows_kernel(
    const scalar_t* __restrict__ x, const int64_t* __restrict__ labels, const scalar_t* __restrict__ weights,
    scalar_t* __restrict__ loss, at::opmath_type<scalar_t>* __restrict__ stats, int64_t rows, int64_t d,
    int64_t ignore_index, int max_newton) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem;
  const int lane = threadIdx.x % TPR;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (BLOCK / TPR) + threadIdx.x / TPR;
  const bool valid = row < rows;
  acc_t mass;
  int64_t y = -1;
  acc_t q[kIndex ? 1 : ITEMS];
  if constexpr (kIndex) {
    y = valid ? labels[row] : ignore_index;
    check_label(y, d, ignore_index);
    mass = y == ignore_index ? acc_t(0) : acc_t(1);
  } else {
    tile_load<TPR, ITEMS, VEC>(q, weights + row * d, d, lane, valid, acc_t(0));
    acc_t s = 0;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      check_weight(q[i]);
      s += q[i];
    }
    mass = checked_mass(row_allreduce<TPR>(s, Sum(), smem.f));
  }
  acc_t u[ITEMS];
  acc_t m, t;
  const bool finite = tile_load_threshold<TPR, ITEMS, VEC, BLOCK>(u, x + row * d, d, lane, valid, smem, max_newton, &m, &t);
  acc_t l;
  if (mass == acc_t(0)) {
    l = 0;  // no target: the row is skipped
  } else if (!finite) {
    l = quiet_nan<acc_t>();
  } else {
    const acc_t inv_mass = acc_t(1) / mass;
    acc_t acc = 0;
#pragma unroll
    for (int i = 0; i < ITEMS; ++i) {
      acc_t qi;
      if constexpr (kIndex) {
        qi = tile_col<TPR, ITEMS, VEC>(i, lane) == y ? acc_t(1) : acc_t(0);
      } else {
        qi = q[i] * inv_mass;
      }
      acc += loss_term(u[i], t, qi);
    }
    l = row_allreduce<TPR>(acc, Sum(), smem.f);
  }
  if (valid && lane == 0) {
    loss[row] = static_cast<scalar_t>(l);
    stats[3 * row] = m;
    stats[3 * row + 1] = t;
    stats[3 * row + 2] = mass;
  }
}

// ---- split rows ------------------------------------------------------------------------------------------------

template <typename scalar_t>
__global__ void __launch_bounds__(kChunkThreads) sparsemax_weight_mass_kernel(
    const scalar_t* __restrict__ weights, at::opmath_type<scalar_t>* __restrict__ part_mass, int64_t rows, int64_t d,
    int64_t nchunks) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    acc_t s = 0;
    for (int64_t j = threadIdx.x; j < kChunk && c0 + j < d; j += kChunkThreads) {
      const acc_t w = static_cast<acc_t>(weights[row * d + c0 + j]);
      check_weight(w);
      s += w;
    }
    s = row_allreduce<kChunkThreads>(s, Sum(), smem.f);
    if (threadIdx.x == 0) part_mass[row * nchunks + blockIdx.x] = s;
  }
}

// Target mass of a row: 1/0 for a class index (checked), else the sum of the chunk partial masses (fixed order).
template <bool kIndex, typename acc_t>
__device__ __forceinline__ acc_t split_row_mass(const int64_t* labels, const acc_t* part_mass, int64_t row,
                                                int64_t d, int64_t nchunks, int64_t ignore_index, RowSmem<acc_t>& smem) {
  if constexpr (kIndex) {
    const int64_t y = labels[row];
    check_label(y, d, ignore_index);
    return y == ignore_index ? acc_t(0) : acc_t(1);
  } else {
    acc_t s = 0;
    for (int64_t k = threadIdx.x; k < nchunks; k += blockDim.x) s += part_mass[row * nchunks + k];
    return checked_mass(row_allreduce<kChunkThreads>(s, Sum(), smem.f));
  }
}

template <typename scalar_t, bool kIndex>
__global__ void __launch_bounds__(kChunkThreads) sparsemax_loss_partial_kernel(
    const scalar_t* __restrict__ x, const int64_t* __restrict__ labels, const scalar_t* __restrict__ weights,
    const at::opmath_type<scalar_t>* __restrict__ part_mass, const at::opmath_type<scalar_t>* __restrict__ row_max,
    const at::opmath_type<scalar_t>* __restrict__ row_tau, at::opmath_type<scalar_t>* __restrict__ part_loss,
    int64_t rows, int64_t d, int64_t nchunks, int64_t ignore_index) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kChunk;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const acc_t mass = split_row_mass<kIndex>(labels, part_mass, row, d, nchunks, ignore_index, smem);
    const acc_t M = row_max[row], t = row_tau[row];
    acc_t acc = 0;
    if (mass != acc_t(0) && isfinite(M)) {
      const int64_t y = kIndex ? labels[row] : -1;
      const acc_t inv_mass = acc_t(1) / mass;
      for (int64_t j = threadIdx.x; j < kChunk && c0 + j < d; j += kChunkThreads) {
        const int64_t col = c0 + j;
        const acc_t u = static_cast<acc_t>(x[row * d + col]) - M;
        const acc_t q = kIndex ? (col == y ? acc_t(1) : acc_t(0)) : static_cast<acc_t>(weights[row * d + col]) * inv_mass;
        acc += loss_term(u, t, q);
      }
    }
    acc = row_allreduce<kChunkThreads>(acc, Sum(), smem.f);
    if (threadIdx.x == 0) part_loss[row * nchunks + blockIdx.x] = acc;
  }
}

template <typename scalar_t, bool kIndex>
__global__ void __launch_bounds__(kChunkThreads) sparsemax_loss_finalize_kernel(
    const int64_t* __restrict__ labels, const at::opmath_type<scalar_t>* __restrict__ part_mass,
    const at::opmath_type<scalar_t>* __restrict__ part_loss, const at::opmath_type<scalar_t>* __restrict__ row_max,
    const at::opmath_type<scalar_t>* __restrict__ row_tau, scalar_t* __restrict__ loss,
    at::opmath_type<scalar_t>* __restrict__ stats, int64_t d, int64_t nchunks, int64_t ignore_index) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ RowSmem<acc_t> smem;
  const int64_t row = blockIdx.x;
  const acc_t mass = split_row_mass<kIndex>(labels, part_mass, row, d, nchunks, ignore_index, smem);
  acc_t s = 0;
  for (int64_t k = threadIdx.x; k < nchunks; k += blockDim.x) s += part_loss[row * nchunks + k];
  s = row_allreduce<kChunkThreads>(s, Sum(), smem.f);
  if (threadIdx.x == 0) {
    const acc_t M = row_max[row];
    loss[row] = static_cast<scalar_t>(mass == acc_t(0) ? acc_t(0) : (isfinite(M) ? s : quiet_nan<acc_t>()));
    stats[3 * row] = M;
    stats[3 * row + 1] = row_tau[row];
    stats[3 * row + 2] = mass;
  }
}

// ---- backward: grad = grad_loss * (sparsemax(z) - q) --------------------------------------------------------------

constexpr int kBackwardThreads = 256;
constexpr int kBackwardItems = 8;
constexpr int kBackwardChunk = kBackwardThreads * kBackwardItems;

template <typename scalar_t, bool kIndex>
__global__ void __launch_bounds__(kBackwardThreads) sparsemax_loss_backward_kernel(
    const at::opmath_type<scalar_t>* __restrict__ grad_loss, const scalar_t* __restrict__ x,
    const int64_t* __restrict__ labels, const scalar_t* __restrict__ weights,
    const at::opmath_type<scalar_t>* __restrict__ stats, scalar_t* __restrict__ out, int64_t rows, int64_t d) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kBackwardChunk;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const acc_t m = stats[3 * row], t = stats[3 * row + 1], mass = stats[3 * row + 2];
    const acc_t gl = grad_loss[row];
    const int64_t y = kIndex ? labels[row] : -1;
    CUDA_KERNEL_ASSERT_MSG(!kIndex || mass == acc_t(0) || (y >= 0 && y < d),
                           "torchxc::sparsemax_loss_backward: class index out of range");
    const acc_t inv_mass = acc_t(1) / mass;
#pragma unroll
    for (int k = 0; k < kBackwardItems; ++k) {
      const int64_t col = c0 + k * kBackwardThreads + threadIdx.x;
      if (col < d) {
        const int64_t off = row * d + col;
        acc_t v = 0;
        if (mass != acc_t(0)) {
          acc_t p = (static_cast<acc_t>(x[off]) - m) - t;
          p = (p > acc_t(0) || p != p) ? p : acc_t(0);  // a NaN row (NaN loss) gets NaN gradients
          const acc_t q = kIndex ? (col == y ? acc_t(1) : acc_t(0)) : static_cast<acc_t>(weights[off]) * inv_mass;
          v = gl * (p - q);
        }
        out[off] = static_cast<scalar_t>(v);
      }
    }
  }
}

// ---- host ---------------------------------------------------------------------------------------------------------

template <typename scalar_t, bool kIndex>
void sparsemax_loss_cuda_kernel(const at::Tensor& x, const at::Tensor& target, at::Tensor& loss, at::Tensor& stats,
                                int64_t rows, int64_t d, int64_t ignore_index, int max_newton, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const int64_t* lp = kIndex ? target.const_data_ptr<int64_t>() : nullptr;
  const scalar_t* wp = kIndex ? nullptr : target.const_data_ptr<scalar_t>();
  scalar_t* out = loss.mutable_data_ptr<scalar_t>();
  acc_t* sp = stats.mutable_data_ptr<acc_t>();
  constexpr int kWords = static_cast<int>(sizeof(acc_t) / 4) * (kIndex ? 1 : 2);
  const bool done = dispatch_row_config<kWords>(d, [&](auto cfg) {
    using C = decltype(cfg);
    constexpr int V = max_vec<scalar_t, C::ITEMS>();
    const dim3 grid(static_cast<unsigned>(ceil_div(rows, C::ROWS_PER_BLOCK)));
    if (rows_aligned(d, V, {xp, wp ? static_cast<const void*>(wp) : static_cast<const void*>(xp)})) {
      sparsemax_loss_rows_kernel<scalar_t, C::TPR, C::ITEMS, V, C::BLOCK, kIndex>
          <<<grid, C::BLOCK, 0, stream>>>(xp, lp, wp, out, sp, rows, d, ignore_index, max_newton);
    } else {
      sparsemax_loss_rows_kernel<scalar_t, C::TPR, C::ITEMS, 1, C::BLOCK, kIndex>
          <<<grid, C::BLOCK, 0, stream>>>(xp, lp, wp, out, sp, rows, d, ignore_index, max_newton);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  });
  if (done) return;
  at::Tensor scratch = at::empty_like(x);  // candidate buffer of the split threshold search
  SplitThreshold<scalar_t> split(x, rows, d, max_newton, stream);
  split.run(xp, scratch.mutable_data_ptr<scalar_t>());
  const auto acc_opts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor part_mass = at::empty({kIndex ? 0 : rows, split.nchunks}, acc_opts);
  at::Tensor part_loss = at::empty({rows, split.nchunks}, acc_opts);
  const dim3 grid = chunk_row_grid(split.nchunks, rows);
  if (!kIndex) {
    sparsemax_weight_mass_kernel<scalar_t><<<grid, kChunkThreads, 0, stream>>>(
        wp, part_mass.mutable_data_ptr<acc_t>(), rows, d, split.nchunks);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  sparsemax_loss_partial_kernel<scalar_t, kIndex><<<grid, kChunkThreads, 0, stream>>>(
      xp, lp, wp, part_mass.const_data_ptr<acc_t>(), split.row_max(), split.row_tau(),
      part_loss.mutable_data_ptr<acc_t>(), rows, d, split.nchunks, ignore_index);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  sparsemax_loss_finalize_kernel<scalar_t, kIndex><<<static_cast<unsigned>(rows), kChunkThreads, 0, stream>>>(
      lp, part_mass.const_data_ptr<acc_t>(), part_loss.const_data_ptr<acc_t>(), split.row_max(), split.row_tau(), out,
      sp, d, split.nchunks, ignore_index);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

std::tuple<at::Tensor, at::Tensor> sparsemax_loss_cuda(const at::Tensor& input, const at::Tensor& target,
                                                        int64_t ignore_index) {
  constexpr const char* op = "torchxc::sparsemax_loss";
  SparsemaxLossProblem P = SparsemaxLossProblem::make(input, target, op);
  check_cuda_row_limits(P.rows, P.d, op);
  if (P.rows == 0) return {P.loss, P.stats};
  const c10::cuda::CUDAGuard guard(input.device());
  const int max_newton = sparsemax_max_newton();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "sparsemax_loss_cuda", [&] {
    if (P.index_target) {
      sparsemax_loss_cuda_kernel<scalar_t, true>(P.x, P.target, P.loss, P.stats, P.rows, P.d, ignore_index,
                                                 max_newton, stream);
    } else {
      sparsemax_loss_cuda_kernel<scalar_t, false>(P.x, P.target, P.loss, P.stats, P.rows, P.d, ignore_index,
                                                  max_newton, stream);
    }
  });
  return {P.loss, P.stats};
}

at::Tensor sparsemax_loss_backward_cuda(const at::Tensor& grad_loss, const at::Tensor& input, const at::Tensor& target,
                                        const at::Tensor& stats) {
  constexpr const char* op = "torchxc::sparsemax_loss_backward";
  SparsemaxLossBackwardProblem P = SparsemaxLossBackwardProblem::make(grad_loss, input, target, stats, op);
  const bool index_target = P.index_target;
  const int64_t rows = P.rows, d = P.d;
  at::Tensor& grad = P.grad;
  if (rows == 0 || d == 0) return grad;
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor &x = P.x, &tg = P.target, &st = P.stats, &gl = P.grad_loss;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid = chunk_row_grid(ceil_div(d, kBackwardChunk), rows);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "sparsemax_loss_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (index_target) {
      sparsemax_loss_backward_kernel<scalar_t, true><<<grid, kBackwardThreads, 0, stream>>>(
          gl.const_data_ptr<acc_t>(), x.const_data_ptr<scalar_t>(), tg.const_data_ptr<int64_t>(), nullptr,
          st.const_data_ptr<acc_t>(), grad.mutable_data_ptr<scalar_t>(), rows, d);
    } else {
      sparsemax_loss_backward_kernel<scalar_t, false><<<grid, kBackwardThreads, 0, stream>>>(
          gl.const_data_ptr<acc_t>(), x.const_data_ptr<scalar_t>(), nullptr, tg.const_data_ptr<scalar_t>(),
          st.const_data_ptr<acc_t>(), grad.mutable_data_ptr<scalar_t>(), rows, d);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad;
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(torchxc, CUDA, m) {
  m.impl("sparsemax_loss", &cuda::sparsemax_loss_cuda);
  m.impl("sparsemax_loss_backward", &cuda::sparsemax_loss_backward_cuda);
}

}  // namespace torchxc
