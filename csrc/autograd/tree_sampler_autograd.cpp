// Autograd of the tree sampler's log-probabilities (see autograd_common.h): log q(labels | z) is differentiable
// with respect to z and the node parameters, so the tree can also be trained by gradient descent.
#include <torch/library.h>

#include "autograd_common.h"

namespace torchxc {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

struct TreeLogProbFunction : public torch::autograd::Function<TreeLogProbFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& z, const at::Tensor& node_weight,
                            const at::Tensor& node_bias, const at::Tensor& label_to_leaf, const at::Tensor& labels) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({z, node_weight, node_bias, label_to_leaf, labels});
    return TORCHXC_OP("torchxc::tree_log_prob", at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                  const at::Tensor&, const at::Tensor&))
        .call(z, node_weight, node_bias, label_to_leaf, labels);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list s = ctx->get_saved_variables();
    using Sig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                               const at::Tensor&, const at::Tensor&,
                                                               const at::Tensor&, const at::Tensor&);
    return once_differentiable("torchxc::tree_log_prob", grads, [&]() -> variable_list {
      auto [gz, gw, gb] =
          TORCHXC_OP("torchxc::tree_log_prob_backward", Sig).call(grads[0], s[0], s[1], s[2], s[3], s[4]);
      return {gz, gw, gb, at::Tensor(), at::Tensor()};
    });
  }
};

at::Tensor tree_log_prob_autograd(const at::Tensor& z, const at::Tensor& node_weight, const at::Tensor& node_bias,
                                  const at::Tensor& label_to_leaf, const at::Tensor& labels) {
  return TreeLogProbFunction::apply(z, node_weight, node_bias, label_to_leaf, labels);
}

}  // namespace

TORCH_LIBRARY_IMPL(torchxc, Autograd, m) {
  m.impl("tree_log_prob", &tree_log_prob_autograd);
  // not differentiable: the draws, the evaluation-time log q of every label, log_prob's backward, the fit's solver
  m.impl("tree_sample", torch::CppFunction::makeFromBoxedFunction<&run_non_differentiable>());
  m.impl("tree_log_prob_all", torch::CppFunction::makeFromBoxedFunction<&run_non_differentiable>());
  m.impl("tree_log_prob_backward", torch::CppFunction::makeFromBoxedFunction<&run_non_differentiable>());
  m.impl("tree_fit_newton", torch::CppFunction::makeFromBoxedFunction<&run_non_differentiable>());
}

}  // namespace torchxc
