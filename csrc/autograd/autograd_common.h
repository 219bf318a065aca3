// Shared by the autograd kernels in csrc/autograd/<family>_autograd.cpp.
//
// Each differentiable op has a torch::autograd::Function registered as its Autograd kernel. Its forward calls the
// op's CPU/CUDA kernel below autograd through the dispatcher, its backward calls the registered backward op (so
// the backward is itself an op, with its own fake kernel, and torch.compile / AOTAutograd traces both). Doing
// this in C++ instead of torch.library.register_autograd in Python removes the Python round trip of every call:
// forward+backward of sparsemax on an 8x16 tensor took 239 us of host time with the Python registration and
// 137 us in C++ (torch.softmax: 98 us; tools/host_overhead.py on the development VM), which is what bounds small
// problems on a GPU.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <memory>
#include <string>
#include <type_traits>
#include <utility>

// The dispatcher handle of the registered op `qualified_name` ("torchxc::...") with the C++ signature given as
// the remaining arguments, looked up once per call site.
#define TORCHXC_OP(qualified_name, ...)                                                                      \
  ([]() -> const c10::TypedOperatorHandle<__VA_ARGS__>& {                                                    \
    static const auto handle =                                                                               \
        c10::Dispatcher::singleton().findSchemaOrThrow(qualified_name, "").template typed<__VA_ARGS__>();       \
    return handle;                                                                                           \
  }())

namespace torchxc {

// The Autograd kernel of an op that is not differentiable (the sampler's draws, the evaluation-time log q of every
// label, the backward ops): runs it below autograd, so that its outputs never require grad, also when the kernel
// computes them with ATen ops on inputs that do. Without an Autograd kernel, a direct call on such inputs gave outputs
// whose backward silently produced zero or no gradients (PyTorch only warned); with a fallthrough, the ATen ops
// inside a kernel recorded a partial graph (a wrong second derivative of tree_log_prob_backward's outputs).
inline void run_non_differentiable(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  op.callBoxed(stack);
}

namespace detail {
// A new autograd node held the way this torch holds nodes (std::shared_ptr in older releases, c10::intrusive_ptr in
// newer ones): Ptr is the type torch::autograd::get_current_node() returns.
template <typename Ptr>
struct MakeNode;
template <typename T>
struct MakeNode<std::shared_ptr<T>> {
  template <typename N, typename... A>
  static std::shared_ptr<N> make(A&&... args) {
    return std::make_shared<N>(std::forward<A>(args)...);
  }
};
template <typename T>
struct MakeNode<c10::intrusive_ptr<T>> {
  template <typename N, typename... A>
  static c10::intrusive_ptr<N> make(A&&... args) {
    return c10::make_intrusive<N>(std::forward<A>(args)...);
  }
};
}  // namespace detail

// Under create_graph=True (grad mode on in a backward): gives the gradients `out` computed by a backward that is not
// itself differentiable a node that raises `msg` if anything differentiates through them, instead of a silently
// wrong second derivative. The node's edges are those of the backward's own node (the forward's inputs) and of the
// incoming gradients `grads`, so that differentiating the results with respect to the forward's input reaches it
// and raises: torch.autograd.function.once_differentiable (and this code before) linked the node to detached copies
// only, so autograd.grad(g, input) failed with "not used in the graph" and torch.autograd.functional.hessian / hvp
// returned zeros.
inline torch::autograd::variable_list link_double_backward_error(const std::string& msg,
                                                                 const torch::autograd::variable_list& grads,
                                                                 torch::autograd::variable_list out) {
  const auto current = torch::autograd::get_current_node();  // the node whose backward is running
  if (!current) {  // not run by the autograd engine: link the node to the results alone
    torch::autograd::variable_list inputs;
    for (const auto& t : out) inputs.push_back(t.defined() ? t.detach().requires_grad_(true) : t);
    return torch::autograd::DelayedError(msg, static_cast<int64_t>(inputs.size())).apply(std::move(inputs));
  }
  torch::autograd::edge_list edges = current->next_edges();
  for (const auto& g : grads) {
    if (g.defined() && g.requires_grad()) edges.push_back(torch::autograd::impl::gradient_edge(g));
  }
  const auto error =
      detail::MakeNode<std::decay_t<decltype(current)>>::template make<torch::autograd::Error>(msg, std::move(edges));
  for (auto& t : out) {
    if (!t.defined() || !t.is_floating_point()) continue;
    t = t.detach();
    torch::autograd::set_history(t, error);
  }
  return out;
}

// For a backward that is not itself differentiable (its op runs below autograd: run_non_differentiable): `compute`
// runs without grad mode; with create_graph=True its results get the raising node above.
template <typename F>
torch::autograd::variable_list once_differentiable(const char* op, const torch::autograd::variable_list& grads,
                                                   F&& compute) {
  const bool create_graph = at::GradMode::is_enabled();
  torch::autograd::variable_list out;
  {
    at::NoGradGuard no_grad;
    out = compute();
  }
  if (!create_graph) return out;
  return link_double_backward_error(
      std::string(op) + ": double backward (differentiating its gradient again) is not supported", grads,
      std::move(out));
}

}  // namespace torchxc
