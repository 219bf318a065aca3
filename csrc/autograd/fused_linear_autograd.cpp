// Autograd helpers of fused_linear_zlpr, whose autograd is written in Python (python/torchxc/fused_linear.py): what
// its backward asks the autograd engine, and its create_graph error node, the C++ losses' own mechanism
// (link_double_backward_error in autograd_common.h).
#include <torch/csrc/autograd/graph_task.h>
#include <torch/library.h>

#include "autograd_common.h"

namespace torchxc {
namespace {

// Registered for the Autograd key, so that the history it sets on the results is returned as is (the autograd
// fallback of a backend kernel would not keep it). Below autograd: the results as they are.
std::vector<at::Tensor> double_backward_error_autograd(at::TensorList grads, at::TensorList incoming,
                                                       c10::string_view msg) {
  return link_double_backward_error(std::string(msg), torch::autograd::variable_list(incoming.begin(), incoming.end()),
                                    torch::autograd::variable_list(grads.begin(), grads.end()));
}
std::vector<at::Tensor> double_backward_error_plain(at::TensorList grads, at::TensorList, c10::string_view) {
  return std::vector<at::Tensor>(grads.begin(), grads.end());
}

}  // namespace

// Whether the backward now running keeps its graph (true outside a backward): the fused backward hands on or scales
// its stored gradients in place only when it does not. No tensor arguments: one kernel for every device.
TORCH_LIBRARY_IMPL(torchxc, CompositeExplicitAutograd, m) {
  m.impl("_backward_keeps_graph", []() { return torch::autograd::get_current_graph_task_keep_graph(); });
  m.impl("_double_backward_error", &double_backward_error_plain);
}

TORCH_LIBRARY_IMPL(torchxc, Autograd, m) {
  m.impl("_double_backward_error", &double_backward_error_autograd);
}

}  // namespace torchxc
