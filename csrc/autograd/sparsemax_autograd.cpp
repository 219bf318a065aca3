// Autograd of the sparsemax family (see autograd_common.h): sparsemax, its backward (which is linear in
// grad_output with the same symmetric Jacobian, so its own backward is the same op again) and the sparsemax loss.
#include <torch/library.h>

#include "autograd_common.h"

namespace torchxc {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor sparsemax_backward_op(const at::Tensor& grad, const at::Tensor& output, int64_t dim) {
  return TORCHXC_OP("torchxc::sparsemax_backward", at::Tensor(const at::Tensor&, const at::Tensor&, int64_t))
      .call(grad, output, dim);
}

struct SparsemaxFunction : public torch::autograd::Function<SparsemaxFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, int64_t dim) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor output = TORCHXC_OP("torchxc::sparsemax", at::Tensor(const at::Tensor&, int64_t)).call(input, dim);
    ctx->save_for_backward({output});
    ctx->saved_data["dim"] = dim;
    return output;
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor output = ctx->get_saved_variables()[0];
    return {sparsemax_backward_op(grads[0], output, ctx->saved_data["dim"].toInt()), at::Tensor()};
  }
};

// The backward's support is piecewise constant in `output` (it only changes on a measure-zero set), so no
// gradient flows into `output`.
struct SparsemaxBackwardFunction : public torch::autograd::Function<SparsemaxBackwardFunction> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad, const at::Tensor& output, int64_t dim) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({output});
    ctx->saved_data["dim"] = dim;
    return sparsemax_backward_op(grad, output, dim);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor output = ctx->get_saved_variables()[0];
    return {sparsemax_backward_op(grads[0], output, ctx->saved_data["dim"].toInt()), at::Tensor(), at::Tensor()};
  }
};

// Outputs (loss, stats): stats (row max, tau - max, target mass) feed the backward and carry no gradient. No
// gradient flows into the target. The loss backward is not differentiable again: a double backward raises.
struct SparsemaxLossFunction : public torch::autograd::Function<SparsemaxLossFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                               int64_t ignore_index) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, stats] =
        TORCHXC_OP("torchxc::sparsemax_loss", std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t))
            .call(input, target, ignore_index);
    ctx->save_for_backward({input, target, stats});
    ctx->mark_non_differentiable({stats});
    ctx->set_materialize_grads(false);  // no zeros for stats before every backward
    return {loss, stats};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const variable_list saved = ctx->get_saved_variables();
    return once_differentiable("torchxc::sparsemax_loss", grads, [&]() -> variable_list {
      at::Tensor grad = TORCHXC_OP("torchxc::sparsemax_loss_backward",
                                   at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&))
                            .call(grads[0], saved[0], saved[1], saved[2]);
      return {grad, at::Tensor(), at::Tensor()};
    });
  }
};

at::Tensor sparsemax_autograd(const at::Tensor& input, int64_t dim) {
  return SparsemaxFunction::apply(input, dim);
}

at::Tensor sparsemax_backward_autograd(const at::Tensor& grad, const at::Tensor& output, int64_t dim) {
  return SparsemaxBackwardFunction::apply(grad, output, dim);
}

std::tuple<at::Tensor, at::Tensor> sparsemax_loss_autograd(const at::Tensor& input, const at::Tensor& target,
                                                           int64_t ignore_index) {
  const variable_list out = SparsemaxLossFunction::apply(input, target, ignore_index);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(torchxc, Autograd, m) {
  m.impl("sparsemax", &sparsemax_autograd);
  m.impl("sparsemax_backward", &sparsemax_backward_autograd);
  m.impl("sparsemax_loss", &sparsemax_loss_autograd);
  // not differentiable (sparsemax_loss_autograd makes the loss's second derivative an error)
  m.impl("sparsemax_loss_backward", torch::CppFunction::makeFromBoxedFunction<&run_non_differentiable>());
}

}  // namespace torchxc
