// Autograd of the ZLPR losses (see autograd_common.h). The forward kernel computes the loss and, when
// compute_grad, its gradient (times grad_scale) in the same pass; the backward hands that stored gradient on as the
// input's gradient, after scaling in place the rows whose incoming gradient is not grad_scale (none, for a mean or
// sum seeded with 1: then the backward moves no gradient memory, on the CPU or a GPU). A backward that cannot own
// it (retained graph, tracing) scales it into a new tensor. The stored gradient is an output without gradient of its
// own: differentiating the backward again raises (once_differentiable in autograd_common.h).
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include "autograd_common.h"

namespace torchxc {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using ZlprSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                   const std::optional<at::Tensor>&, bool, double);

// Whether this backward owns the stored gradient: not traced (torch.compile: fake or functional tensors, dispatch
// modes, symbolic shapes), not batched (functorch transforms; the legacy vmap of is_grads_batched=True and
// jacobian(vectorize=True), whose one buffer would be scaled for a whole batch of incoming gradients), and the graph
// is freed after this node (a retained graph keeps the
// tensor, and a later backward through it must find it unchanged). It may then become the input's gradient itself,
// scaled in place where needed, with no second input-sized tensor.
bool owns_stored_gradient(const at::Tensor& go, const at::Tensor& grad) {
  constexpr auto traced_or_batched = c10::DispatchKeySet(
      {c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot, c10::DispatchKey::Functionalize,
       c10::DispatchKey::FuncTorchBatched, c10::DispatchKey::FuncTorchGradWrapper, c10::DispatchKey::Batched});
  return !go.key_set().has_any(traced_or_batched) && !grad.key_set().has_any(traced_or_batched) &&
         !c10::impl::TorchDispatchModeTLS::any_modes_set() && !go.unsafeGetTensorImpl()->has_symbolic_sizes_strides() &&
         !torch::autograd::get_current_graph_task_keep_graph() && grad.is_contiguous() && grad.numel() > 0;
}

// Whether the owned gradient (already scaled by grad_scale) is the input's gradient as it is: go is grad_scale in
// every element. On the CPU only: on a GPU the value test would cost a host sync (and break CUDA graph capture), so
// there _zlpr_scale_grad_ makes it on the device and skips the rows that need nothing.
bool can_hand_on(const at::Tensor& go, double grad_scale) {
  return go.is_cpu() && (go == grad_scale).all().item<bool>();  // called under no_grad (once_differentiable)
}

template <typename Tag>
struct ZlprFunction : public torch::autograd::Function<ZlprFunction<Tag>> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& labels,
                               const std::optional<at::Tensor>& mask, bool compute_grad, double grad_scale) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [loss, grad] = TORCHXC_OP(Tag::name, ZlprSig).call(input, labels, mask, compute_grad, grad_scale);
    ctx->save_for_backward({grad});
    ctx->saved_data["compute_grad"] = compute_grad;
    ctx->saved_data["grad_scale"] = grad_scale;
    ctx->mark_non_differentiable({grad});
    // The stored-gradient output gets no gradient: without this, autograd would fill an input-sized tensor of
    // zeros for it before every backward (a quarter of the forward+backward time at 1024x32768 on the CPU).
    ctx->set_materialize_grads(false);
    return {loss, grad};
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list none = {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    if (!grads[0].defined()) return none;
    TORCH_CHECK(ctx->saved_data["compute_grad"].toBool(), Tag::name,
                ": backward needs the gradient, but the op ran with compute_grad=False");
    const at::Tensor grad = ctx->get_saved_variables()[0];
    const double grad_scale = ctx->saved_data["grad_scale"].toDouble();
    return once_differentiable(Tag::name, grads, [&]() -> variable_list {
      variable_list out = none;
      // The common case (a mean or sum of the rows, seed 1) needs no work: the stored gradient, already scaled by
      // grad_scale, is handed on (a caller of the raw op who kept its second output gets that same tensor back, and
      // sees it scaled in place when the incoming gradient differs from grad_scale).
      if (owns_stored_gradient(grads[0], grad)) {
        if (!can_hand_on(grads[0], grad_scale)) {
          TORCHXC_OP("torchxc::_zlpr_scale_grad_", void(const at::Tensor&, const at::Tensor&, double))
              .call(grad, grads[0].to(grad.scalar_type()), grad_scale);
        }
        out[0] = grad;
      } else {
        const at::Tensor go = grad_scale == 1.0 ? grads[0] : grads[0] / grad_scale;
        out[0] = grad * go.unsqueeze(-1).to(grad.scalar_type());
      }
      return out;
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
                                                 const std::optional<at::Tensor>& mask, bool compute_grad,
                                                 double grad_scale) {
  const variable_list out = ZlprFunction<Tag>::apply(input, labels, mask, compute_grad, grad_scale);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(torchxc, Autograd, m) {
  m.impl("zlpr_loss", &zlpr_autograd<Dense>);
  m.impl("zlpr_loss_sparse", &zlpr_autograd<Sparse>);
}

}  // namespace torchxc
