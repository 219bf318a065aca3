// CUDA kernels of the adversarial tree sampler (tree definition in csrc/common/tree_common.h): one thread per draw
// (sampling) or per (row, label) (log q and the paths of its backward). The walk is the same host-device code as
// the CPU kernels', so a seed gives the same draws on both. Current stream, launch checks, no host
// synchronisation; out-of-range labels trigger a device-side assertion.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <torch/library.h>

#include "../common/tree_common.h"

namespace torchxc {
namespace cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 20)));
}

template <typename scalar_t>
__global__ void tree_sample_kernel(const scalar_t* __restrict__ z, const scalar_t* __restrict__ weight,
                                   const scalar_t* __restrict__ bias, const int64_t* __restrict__ leaf_to_label,
                                   int64_t* __restrict__ labels, scalar_t* __restrict__ log_q, int64_t B, int64_t S,
                                   int64_t k, int64_t depth, int64_t num_labels, uint64_t seed) {
  const int64_t n = B * S;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / S, s = i % S;
    const int64_t leaf = tree_draw(z + b * k, weight, bias, k, depth, num_labels, seed, static_cast<uint64_t>(b),
                                   static_cast<uint64_t>(s), log_q + i);
    const int64_t label = leaf_to_label[leaf];
    CUDA_KERNEL_ASSERT_MSG(label >= 0 && label < num_labels,
                           "torchxc::tree_sample: leaf_to_label maps a leaf below C to a label outside [0, C)");
    labels[i] = label;
  }
}

template <typename scalar_t>
__global__ void tree_path_kernel(const scalar_t* __restrict__ z, const scalar_t* __restrict__ weight,
                                 const scalar_t* __restrict__ bias, const int64_t* __restrict__ label_to_leaf,
                                 const int64_t* __restrict__ labels, scalar_t* __restrict__ log_q,
                                 int64_t* __restrict__ nodes, scalar_t* __restrict__ coef, int64_t B, int64_t P,
                                 int64_t k, int64_t depth, int64_t num_labels) {
  const int64_t n = B * P;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t y = labels[i];
    CUDA_KERNEL_ASSERT_MSG(y >= 0 && y < num_labels, "torchxc::tree_log_prob: label out of range");
    const int64_t leaf = label_to_leaf[y];
    CUDA_KERNEL_ASSERT_MSG(leaf >= 0 && leaf < num_labels,
                           "torchxc::tree_log_prob: label_to_leaf entry is not a label's leaf (expected [0, C))");
    log_q[i] = tree_path(z + (i / P) * k, weight, bias, k, depth, num_labels, leaf, nodes ? nodes + i * depth : nullptr,
                         coef ? coef + i * depth : nullptr);
  }
}

std::tuple<at::Tensor, at::Tensor> tree_sample_cuda(const at::Tensor& z_in, const at::Tensor& weight_in,
                                                    const at::Tensor& bias_in, const at::Tensor& leaf_to_label_in,
                                                    int64_t num_labels, int64_t num_samples, int64_t seed) {
  constexpr const char* op = "torchxc::tree_sample";
  const int64_t depth = check_tree_inputs(z_in, weight_in, bias_in, num_labels, op);
  check_sample_inputs(z_in, leaf_to_label_in, depth, num_samples, op);
  const c10::cuda::CUDAGuard guard(z_in.device());
  const at::Tensor z = z_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const at::Tensor leaf_to_label = leaf_to_label_in.contiguous();
  const int64_t B = z.size(0), k = z.size(1), S = num_samples;
  at::Tensor labels = at::empty({B, S}, z.options().dtype(at::kLong));
  at::Tensor log_q = at::empty({B, S}, z.options());
  if (B * S == 0) return {labels, log_q};
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "tree_sample_cuda", [&] {
    tree_sample_kernel<scalar_t><<<blocks_for(B * S), kThreads, 0, stream>>>(
        z.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), bias.const_data_ptr<scalar_t>(),
        leaf_to_label.const_data_ptr<int64_t>(), labels.mutable_data_ptr<int64_t>(), log_q.mutable_data_ptr<scalar_t>(),
        B, S, k, depth, num_labels, static_cast<uint64_t>(seed));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {labels, log_q};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tree_paths_cuda(const at::Tensor& z_in, const at::Tensor& weight_in,
                                                               const at::Tensor& bias_in,
                                                               const at::Tensor& label_to_leaf_in,
                                                               const at::Tensor& labels_in, bool want_path,
                                                               const char* op) {
  const int64_t depth = check_log_prob_inputs(z_in, weight_in, bias_in, label_to_leaf_in, op);
  const int64_t C = label_to_leaf_in.size(0);
  check_same_device(z_in, labels_in, op, "z", "labels");
  TORCH_CHECK(labels_in.scalar_type() == at::kLong && labels_in.dim() == 2 && labels_in.size(0) == z_in.size(0), op,
              ": expected labels int64 of shape [", z_in.size(0), ", P], but got ", labels_in.scalar_type(), " ",
              labels_in.sizes());
  const c10::cuda::CUDAGuard guard(z_in.device());
  const at::Tensor z = z_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const at::Tensor label_to_leaf = label_to_leaf_in.contiguous(), labels = labels_in.contiguous();
  const int64_t B = z.size(0), P = labels.size(1), k = z.size(1);
  at::Tensor log_q = at::empty({B, P}, z.options());
  at::Tensor nodes = at::empty({want_path ? B : 0, P, depth}, z.options().dtype(at::kLong));
  at::Tensor coef = at::empty({want_path ? B : 0, P, depth}, z.options());
  if (B * P == 0) return {log_q, nodes, coef};
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "tree_paths_cuda", [&] {
    tree_path_kernel<scalar_t><<<blocks_for(B * P), kThreads, 0, stream>>>(
        z.const_data_ptr<scalar_t>(), weight.const_data_ptr<scalar_t>(), bias.const_data_ptr<scalar_t>(),
        label_to_leaf.const_data_ptr<int64_t>(), labels.const_data_ptr<int64_t>(), log_q.mutable_data_ptr<scalar_t>(),
        want_path ? nodes.mutable_data_ptr<int64_t>() : nullptr,
        want_path ? coef.mutable_data_ptr<scalar_t>() : nullptr, B, P, k, depth, C);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {log_q, nodes, coef};
}

at::Tensor tree_log_prob_cuda(const at::Tensor& z, const at::Tensor& weight, const at::Tensor& bias,
                              const at::Tensor& label_to_leaf, const at::Tensor& labels) {
  return std::get<0>(tree_paths_cuda(z, weight, bias, label_to_leaf, labels, false, "torchxc::tree_log_prob"));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tree_log_prob_backward_cuda(const at::Tensor& grad,
                                                                           const at::Tensor& z,
                                                                           const at::Tensor& weight,
                                                                           const at::Tensor& bias,
                                                                           const at::Tensor& label_to_leaf,
                                                                           const at::Tensor& labels) {
  constexpr const char* op = "torchxc::tree_log_prob_backward";
  check_log_prob_grad(grad, labels, op);
  auto paths = tree_paths_cuda(z, weight, bias, label_to_leaf, labels, true, op);
  return tree_grads_from_paths(grad, z.contiguous(), weight.contiguous(), std::get<1>(paths), std::get<2>(paths));
}

}  // namespace
}  // namespace cuda

TORCH_LIBRARY_IMPL(torchxc, CUDA, m) {
  m.impl("tree_sample", &cuda::tree_sample_cuda);
  m.impl("tree_log_prob", &cuda::tree_log_prob_cuda);
  m.impl("tree_log_prob_backward", &cuda::tree_log_prob_backward_cuda);
}

}  // namespace torchxc
