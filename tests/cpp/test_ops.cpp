// C++ smoke test of the LibTorch build: the ops are registered by linking libtorchxc and are called through the
// dispatcher, as a C++ user would. Checks sparsemax and the sparsemax loss on a small example. Exit code 0 = ok.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>

int main() {
  auto sparsemax = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchxc::sparsemax", "")
                       .typed<at::Tensor(const at::Tensor&, int64_t)>();
  auto loss = c10::Dispatcher::singleton()
                  .findSchemaOrThrow("torchxc::sparsemax_loss", "")
                  .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, int64_t)>();
  const at::Tensor z = at::tensor({1.0, 0.5, -1.0}, at::kDouble);
  const at::Tensor p = sparsemax.call(z, -1);
  const double expected[3] = {0.75, 0.25, 0.0};
  for (int i = 0; i < 3; ++i) {
    if (std::abs(p[i].item<double>() - expected[i]) > 1e-12) {
      std::printf("sparsemax: wrong value %d\n", i);
      return 1;
    }
  }
  // L(z; e_0) = 1/2 ||p - e_0||^2 + max(tau - z_0, 0) = 1/2 (0.0625 + 0.0625) = 0.0625
  const auto [l, stats] = loss.call(z.unsqueeze(0), at::tensor({int64_t(0)}), -100);
  if (std::abs(l.item<double>() - 0.0625) > 1e-12) {
    std::printf("sparsemax_loss: got %.17g\n", l.item<double>());
    return 1;
  }
  std::printf("torchxc C++ smoke test: ok\n");
  return 0;
}
