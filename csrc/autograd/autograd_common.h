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
#include <torch/csrc/autograd/functions/basic_ops.h>

#include <string>

// The dispatcher handle of the registered op `qualified_name` ("torchxc::...") with the C++ signature given as
// the remaining arguments, looked up once per call site.
#define TORCHXC_OP(qualified_name, ...)                                                                      \
  ([]() -> const c10::TypedOperatorHandle<__VA_ARGS__>& {                                                    \
    static const auto handle =                                                                               \
        c10::Dispatcher::singleton().findSchemaOrThrow(qualified_name, "").template typed<__VA_ARGS__>();       \
    return handle;                                                                                           \
  }())

namespace torchxc {

// For a backward that is not itself differentiable (its op has no autograd kernel): when it runs with
// create_graph=True (grad mode on), its results get a node that raises if anything differentiates through them,
// as torch.autograd.function.once_differentiable does in Python, instead of a silently wrong second derivative.
// `compute` runs without grad mode (no autograd fallback warnings).
template <typename F>
torch::autograd::variable_list once_differentiable(const char* op, F&& compute) {
  const bool create_graph = at::GradMode::is_enabled();
  torch::autograd::variable_list out;
  {
    at::NoGradGuard no_grad;
    out = compute();
  }
  if (!create_graph) return out;
  torch::autograd::variable_list inputs;
  for (const auto& t : out) inputs.push_back(t.defined() ? t.detach().requires_grad_(true) : t);
  return torch::autograd::DelayedError(std::string(op) + ": double backward (differentiating its gradient again) "
                                       "is not supported",
                                       static_cast<int64_t>(inputs.size()))
      .apply(std::move(inputs));
}

}  // namespace torchxc
