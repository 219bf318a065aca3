// CPU kernels of the adversarial tree sampler (tree definition in csrc/common/tree_common.h): sampling, log q of
// given labels and its backward. Examples run in parallel; a draw costs D dot products of length k.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../common/tree_common.h"

namespace torchxc {
namespace {

std::tuple<at::Tensor, at::Tensor> tree_sample_cpu(const at::Tensor& z_in, const at::Tensor& weight_in,
                                                   const at::Tensor& bias_in, const at::Tensor& leaf_to_label_in,
                                                   int64_t num_labels, int64_t num_samples, int64_t seed) {
  constexpr const char* op = "torchxc::tree_sample";
  const int64_t depth = check_tree_inputs(z_in, weight_in, bias_in, num_labels, op);
  TORCH_CHECK(num_samples >= 0, op, ": expected num_samples >= 0, but got ", num_samples);
  TORCH_CHECK(leaf_to_label_in.scalar_type() == at::kLong && leaf_to_label_in.dim() == 1 &&
                  leaf_to_label_in.size(0) == (int64_t(1) << depth),
              op, ": expected leaf_to_label int64 of shape [", int64_t(1) << depth, "], but got ",
              leaf_to_label_in.scalar_type(), " ", leaf_to_label_in.sizes());
  check_same_device(z_in, leaf_to_label_in, op, "z", "leaf_to_label");
  const at::Tensor z = z_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const at::Tensor leaf_to_label = leaf_to_label_in.contiguous();
  const int64_t B = z.size(0), k = z.size(1), S = num_samples;
  at::Tensor labels = at::empty({B, S}, z.options().dtype(at::kLong));
  at::Tensor log_q = at::empty({B, S}, z.options());
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
        }
      }
    });
  });
  return {labels, log_q};
}

// The leaves of `labels` [B, P] (checked against C), from label_to_leaf [C].
at::Tensor leaves_of(const at::Tensor& labels, const at::Tensor& label_to_leaf, int64_t num_labels, const char* op) {
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
    }
  });
  return leaves;
}

void check_label_to_leaf(const at::Tensor& z, const at::Tensor& label_to_leaf, const char* op) {
  TORCH_CHECK(label_to_leaf.scalar_type() == at::kLong && label_to_leaf.dim() == 1, op,
              ": expected label_to_leaf int64 of shape [C], but got ", label_to_leaf.scalar_type(), " ",
              label_to_leaf.sizes());
  check_same_device(z, label_to_leaf, op, "z", "label_to_leaf");
}

// log q of labels, and optionally (nodes, coef) [B, P, D] for the backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor> tree_paths_cpu(const at::Tensor& z_in, const at::Tensor& weight_in,
                                                              const at::Tensor& bias_in,
                                                              const at::Tensor& label_to_leaf_in,
                                                              const at::Tensor& labels, bool want_path,
                                                              const char* op) {
  check_label_to_leaf(z_in, label_to_leaf_in, op);
  const int64_t C = label_to_leaf_in.size(0);
  const int64_t depth = check_tree_inputs(z_in, weight_in, bias_in, C, op);
  check_same_device(z_in, labels, op, "z", "labels");
  TORCH_CHECK(labels.scalar_type() == at::kLong && labels.dim() == 2 && labels.size(0) == z_in.size(0), op,
              ": expected labels int64 of shape [", z_in.size(0), ", P], but got ", labels.scalar_type(), " ",
              labels.sizes());
  const at::Tensor z = z_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const at::Tensor leaves = leaves_of(labels, label_to_leaf_in.contiguous(), C, op);
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
  TORCH_CHECK(grad.sizes() == labels.sizes(), op, ": expected grad of the labels' shape ", labels.sizes(),
              ", but got ", grad.sizes());
  auto paths = tree_paths_cpu(z, weight, bias, label_to_leaf, labels, true, op);
  return tree_grads_from_paths(grad, z.contiguous(), weight.contiguous(), std::get<1>(paths), std::get<2>(paths));
}

}  // namespace

TORCH_LIBRARY_IMPL(torchxc, CPU, m) {
  m.impl("tree_sample", &tree_sample_cpu);
  m.impl("tree_log_prob", &tree_log_prob_cpu);
  m.impl("tree_log_prob_backward", &tree_log_prob_backward_cpu);
}

}  // namespace torchxc
