// Autograd of the ZLPR losses (see autograd_common.h). The forward kernel computes the loss and, when
// compute_grad, its gradient in the same pass; the backward only scales that stored gradient by the incoming
// row gradients. The stored gradient is an output without gradient of its own: differentiating the backward again
// raises (once_differentiable in autograd_common.h).
#include <torch/library.h>

#include "autograd_common.h"

namespace torchxc {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using ZlprSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                   const std::optional<at::Tensor>&, bool);

template <typename Tag>
struct ZlprFunction : public torch::autograd::Function<ZlprFunction<Tag>> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& labels,
                               const std::optional<at::Tensor>& mask, bool compute_grad) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, grad] = TORCHXC_OP(Tag::name, ZlprSig).call(input, labels, mask, compute_grad);
    ctx->save_for_backward({grad});
    ctx->saved_data["compute_grad"] = compute_grad;
    ctx->mark_non_differentiable({grad});
    // The stored-gradient output gets no gradient: without this, autograd would fill an input-sized tensor of
    // zeros for it before every backward (a quarter of the forward+backward time at 1024x32768 on the CPU).
    ctx->set_materialize_grads(false);
    return {loss, grad};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    TORCH_CHECK(ctx->saved_data["compute_grad"].toBool(), Tag::name,
                ": backward needs the gradient, but the op ran with compute_grad=False");
    const at::Tensor grad = ctx->get_saved_variables()[0];
    return once_differentiable(Tag::name, [&]() -> variable_list {
      return {grad * grads[0].unsqueeze(-1).to(grad.scalar_type()), at::Tensor(), at::Tensor(), at::Tensor()};
    });
  }
};

struct Dense {
  static constexpr const char* name = "torchxc::zlpr_loss";
};
struct Sparse {
  static constexpr const char* name = "torchxc::zlpr_loss_sparse";
};

template <typename Tag>
std::tuple<at::Tensor, at::Tensor> zlpr_autograd(const at::Tensor& input, const at::Tensor& labels,
                                                 const std::optional<at::Tensor>& mask, bool compute_grad) {
  const variable_list out = ZlprFunction<Tag>::apply(input, labels, mask, compute_grad);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(torchxc, Autograd, m) {
  m.impl("zlpr_loss", &zlpr_autograd<Dense>);
  m.impl("zlpr_loss_sparse", &zlpr_autograd<Sparse>);
}

}  // namespace torchxc
