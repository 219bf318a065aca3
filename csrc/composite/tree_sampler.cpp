// Device-agnostic parts of the tree sampler, written with ATen ops (so they run wherever the tensors are):
// the evaluation-time log-probabilities of every label, and the gradient accumulation of the log-prob backward.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/tree_common.h"

namespace torchxc {

std::tuple<at::Tensor, at::Tensor, at::Tensor> tree_grads_from_paths(const at::Tensor& grad, const at::Tensor& z,
                                                                     const at::Tensor& weight,
                                                                     const at::Tensor& nodes, const at::Tensor& coef) {
  const int64_t B = z.size(0), k = z.size(1), depth = nodes.size(2);
  if (nodes.numel() == 0) {
    return {at::zeros_like(z), at::zeros_like(weight), at::zeros({weight.size(0)}, weight.options())};
  }
  const at::Tensor c = coef * grad.to(coef.scalar_type()).unsqueeze(-1);  // [B, P, D]
  const at::Tensor flat_nodes = nodes.reshape({-1});
  at::Tensor grad_bias = at::zeros({weight.size(0)}, weight.options()).index_add_(0, flat_nodes, c.reshape({-1}));
  // sizes spelled out, not -1: with k = 0 (a tree of biases only) the tensors are empty and -1 is ambiguous
  const at::Tensor zc = (c.unsqueeze(-1) * z.view({B, 1, 1, k})).reshape({flat_nodes.size(0), k});
  at::Tensor grad_weight = at::zeros_like(weight).index_add_(0, flat_nodes, zc);
  const int64_t P = nodes.size(1);
  at::Tensor grad_z =
      depth == 0 ? at::zeros_like(z)
                 : (c.unsqueeze(-1) * weight.index_select(0, flat_nodes).view({B, P, depth, k})).sum({1, 2});
  return {grad_z, grad_weight, grad_bias};
}

namespace {

// log q(y | z) for all C labels: level by level, the log-probabilities of the 2^l nodes of a level branch into
// their children with one matrix product per level (O(B 2^D k) work). The padding nodes are a suffix of each level
// and are filled in place; masks over whole levels and a log sigmoid written out in five ATen ops made an earlier
// version 0.70-0.72x the speed of the plain level walk (bench_tree_sampler.py) on an H200. Serves CUDA and other
// devices; the CPU has a fused kernel (tree_log_prob_all_cpu in cpu/tree_sampler_cpu.cpp; at C = 10^6 this
// version's output-sized temporaries of the deep levels dominate: 12.9 s against 1.4 s for 512 rows on a 2-core Xeon).
at::Tensor tree_log_prob_all(const at::Tensor& z, const at::Tensor& weight, const at::Tensor& bias,
                             const at::Tensor& label_to_leaf) {
  constexpr const char* op = "torchxc::tree_log_prob_all";
  const int64_t depth = check_log_prob_inputs(z, weight, bias, label_to_leaf, op);
  const int64_t C = label_to_leaf.size(0);
  if (C > 0 && label_to_leaf.is_cuda()) {  // O(C log C) next to the op's O(B C k); a device-side assert, no sync
    const at::Tensor ok = (std::get<0>(at::sort(label_to_leaf)) == at::arange(C, label_to_leaf.options())).all();
    at::_assert_async(ok, not_a_permutation_message(op, C));
  }
  const int64_t B = z.size(0);
  at::Tensor logp = at::zeros({B, 1}, z.options());
  for (int64_t l = 0; l < depth; ++l) {
    const int64_t first = (int64_t(1) << l) - 1, width = int64_t(1) << l;
    const at::Tensor logits = at::addmm(bias.narrow(0, first, width), z, weight.narrow(0, first, width).t());
    // log sigmoid(-x) (left child) and log sigmoid(x) (right child): ATen's log_sigmoid is min(x, 0) - log1p(e^-|x|),
    // exact to rounding for every x (at::softplus returns x itself above its threshold of 20, an error of up to
    // 2e-9), in one pass each
    const at::Tensor left = at::log_sigmoid(at::neg(logits));
    const at::Tensor right = at::log_sigmoid(logits);
    // nodes whose right subtree holds only padding go left with probability 1; they are the level's last ones:
    // node p is such a node when (2p + 1) * leaves_per_child >= C, i.e. p >= ceil(C / leaves_per_child) / 2
    const int64_t leaves_per_child = int64_t(1) << (depth - l - 1);
    const int64_t p0 = std::min(width, ((C + leaves_per_child - 1) / leaves_per_child) / 2);
    if (p0 < width) {
      left.narrow(1, p0, width - p0).fill_(0.0);
      right.narrow(1, p0, width - p0).fill_(-std::numeric_limits<double>::infinity());
    }
    logp = at::stack({logp + left, logp + right}, -1).view({B, 2 * width});
  }
  return logp.index_select(1, label_to_leaf);
}

// TreeSampler.fit's solver has a CPU kernel only (cpu/tree_fit_cpu.cpp); on other devices the fit runs the same
// Newton steps with ATen ops in Python (_NodeLogistic in python/torchxc/sampling.py).
std::tuple<at::Tensor, at::Tensor> tree_fit_newton_elsewhere(const at::Tensor& z, const at::Tensor&,
                                                              const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                              int64_t, double) {
  TORCH_CHECK(false, "torchxc::tree_fit_newton: has a CPU kernel only, got z on ", z.device(),
              "; TreeSampler.fit uses ATen ops on other devices");
}

}  // namespace

TORCH_LIBRARY_IMPL(torchxc, CompositeExplicitAutograd, m) {
  m.impl("tree_log_prob_all", &tree_log_prob_all);
  m.impl("tree_fit_newton", &tree_fit_newton_elsewhere);
}

}  // namespace torchxc
