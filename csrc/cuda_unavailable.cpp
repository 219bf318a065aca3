// Built only when torchxc is compiled without CUDA kernels (FORCE_ONLY_CPU=1, or no CUDA toolkit / CPU-only
// torch at build time). Registers a CUDA kernel for every op that fails with a message naming the cause,
// instead of the dispatcher's generic "could not run ... with arguments from the 'CUDA' backend".
// tests/test_build.py checks that this list covers every op in the schema.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace torchxc {
namespace {

void no_cuda_kernels(const c10::OperatorHandle& op, torch::jit::Stack*) {
  TORCH_CHECK(false, op.schema().name(),
              ": this build of torchxc has no CUDA kernels (it was compiled without CUDA), but got CUDA tensors. "
              "Rebuild with a CUDA build of torch and the CUDA toolkit (FORCE_CUDA=1 pip install ...), or move "
              "the inputs to the CPU.");
}

}  // namespace

TORCH_LIBRARY_IMPL(torchxc, CUDA, m) {
  for (const char* name : {"sparsemax", "sparsemax_backward", "sparsemax_loss", "sparsemax_loss_backward",
                           "zlpr_loss", "zlpr_loss_sparse", "_zlpr_scale_grad_",
                           "tree_sample", "tree_log_prob", "tree_log_prob_backward"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&no_cuda_kernels>());
  }
}

}  // namespace torchxc
