// C++ smoke test of the LibTorch build: the ops are registered by linking libtorchxc and are called through the
// dispatcher, as a C++ user would. Checks each op family on a small example against values worked out by hand (or
// by a plain ATen formula), and autograd through the C++ autograd kernels. Exit code 0 = ok.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>

#include <cmath>
#include <cstdio>
#include <optional>
#include <tuple>

namespace {

template <typename Sig>
c10::TypedOperatorHandle<Sig> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

int failures = 0;

void expect(bool ok, const char* what) {
  if (!ok) {
    std::printf("FAILED: %s\n", what);
    ++failures;
  }
}

// A [rows, n / rows] float64 matrix (at::tensor takes a flat list).
at::Tensor mat(std::initializer_list<double> values, int64_t rows) {
  return at::tensor(at::ArrayRef<double>(values), at::kDouble).view({rows, -1});
}

bool close(const at::Tensor& a, const at::Tensor& b, double tol = 1e-12) {
  return a.sizes() == b.sizes() && (a - b).abs().max().item<double>() <= tol;
}

using T = at::Tensor;
using Pair = std::tuple<T, T>;

void sparsemax_family() {
  auto sparsemax = op<T(const T&, int64_t)>("torchxc::sparsemax");
  auto loss = op<Pair(const T&, const T&, int64_t)>("torchxc::sparsemax_loss");
  const T z = at::tensor({1.0, 0.5, -1.0}, at::kDouble);
  expect(close(sparsemax.call(z, -1), at::tensor({0.75, 0.25, 0.0}, at::kDouble)), "sparsemax values");
  // L(z; e_0) = 1/2 ||p - e_0||^2 + max(tau - z_0, 0) = 1/2 (0.0625 + 0.0625) = 0.0625
  const auto [l, stats] = loss.call(z.unsqueeze(0), at::tensor({int64_t(0)}), -100);
  expect(std::abs(l.item<double>() - 0.0625) <= 1e-12, "sparsemax_loss value");
  // autograd (the C++ kernel): d/dz (p . g) = s * (g - mean over the support of g), support {0, 1}
  const T zg = z.clone().set_requires_grad(true);
  const T g = at::tensor({1.0, 3.0, 5.0}, at::kDouble);
  (sparsemax.call(zg, -1) * g).sum().backward();
  expect(close(zg.grad(), at::tensor({-1.0, 1.0, 0.0}, at::kDouble)), "sparsemax backward");
  const T zl = z.unsqueeze(0).clone().set_requires_grad(true);
  std::get<0>(loss.call(zl, at::tensor({int64_t(0)}), -100)).sum().backward();  // sparsemax(z) - e_0
  expect(close(zl.grad(), mat({-0.25, 0.25, 0.0}, 1)), "sparsemax_loss backward");
}

void zlpr_family() {
  using Opt = std::optional<T>;
  auto dense = op<Pair(const T&, const T&, const Opt&, bool, double)>("torchxc::zlpr_loss");
  auto sparse = op<Pair(const T&, const T&, const Opt&, bool, double)>("torchxc::zlpr_loss_sparse");
  const T s = mat({1.0, -1.0, 0.5}, 1);
  const T target = mat({1.0, 0.0, 0.0}, 1);
  // L = log(1 + e^-1 + e^0.5) + log(1 + e^-1); dL/ds: e^s / (1 + sum) on negatives, -e^-s / (1 + sum) on positives
  const double neg = 1 + std::exp(-1.0) + std::exp(0.5), pos = 1 + std::exp(-1.0);
  const auto [l, grad] = dense.call(s, target, std::nullopt, true, 1.0);
  expect(std::abs(l.item<double>() - (std::log(neg) + std::log(pos))) <= 1e-12, "zlpr_loss value");
  expect(close(grad, mat({-std::exp(-1.0) / pos, std::exp(-1.0) / neg, std::exp(0.5) / neg}, 1)), "zlpr_loss gradient");
  const auto [ls, grads] = sparse.call(s, at::tensor({int64_t(0), int64_t(-1)}).view({1, 2}), std::nullopt, true, 1.0);
  expect(close(ls, l) && close(grads, grad), "zlpr_loss_sparse equals the dense form");
  const T sg = s.clone().set_requires_grad(true);
  (2.0 * std::get<0>(dense.call(sg, target, std::nullopt, true, 1.0))).sum().backward();  // scales the stored grad
  expect(close(sg.grad(), 2.0 * grad), "zlpr_loss backward");
}

void tree_family() {
  auto sample = op<Pair(const T&, const T&, const T&, const T&, int64_t, int64_t, int64_t)>("torchxc::tree_sample");
  auto log_prob = op<T(const T&, const T&, const T&, const T&, const T&)>("torchxc::tree_log_prob");
  auto log_prob_all = op<T(const T&, const T&, const T&, const T&)>("torchxc::tree_log_prob_all");
  // C = 3 labels, depth 2, nodes 0 (root), 1, 2; leaf 3 is padding, so node 2 goes left (label of leaf 2) surely
  const T w = mat({0.5, -1.0, 2.0, 0.25, -3.0, 1.0}, 3);
  const T b = at::tensor({0.1, -0.2, 0.3}, at::kDouble);
  const T leaf_to_label = at::tensor({int64_t(2), int64_t(0), int64_t(1), int64_t(-1)});
  const T label_to_leaf = at::tensor({int64_t(1), int64_t(2), int64_t(0)});
  const T z = mat({0.7, -0.4, -1.5, 2.0}, 2);
  // q(leaf) by hand: root right with sigmoid(x0), node 1 right with sigmoid(x1); leaf 2 = right, left-forced
  const T x0 = at::mv(z, w[0]) + b[0], x1 = at::mv(z, w[1]) + b[1];
  const T by_leaf = at::stack({at::log_sigmoid(-x0) + at::log_sigmoid(-x1), at::log_sigmoid(-x0) + at::log_sigmoid(x1),
                               at::log_sigmoid(x0)}, 1);  // leaves 0, 1, 2
  const T all = log_prob_all.call(z, w, b, label_to_leaf);
  expect(close(all, by_leaf.index_select(1, label_to_leaf)), "tree_log_prob_all against the hand-made tree");
  const auto [labels, log_q] = sample.call(z, w, b, leaf_to_label, 3, 64, 7);
  expect(labels.min().item<int64_t>() >= 0 && labels.max().item<int64_t>() < 3, "tree_sample labels in [0, 3)");
  expect(close(log_q, all.gather(1, labels)), "tree_sample log q equals log q of the drawn labels");
  expect(at::equal(std::get<0>(sample.call(z, w, b, leaf_to_label, 3, 64, 7)), labels), "tree_sample seeded");
  // the draws follow q: 4096 per row, frequencies within 0.05 of exp(log q) (binomial sd <= 0.008)
  const T many = std::get<0>(sample.call(z, w, b, leaf_to_label, 3, 4096, 11));
  const T freq = at::stack({(many == 0).sum(1), (many == 1).sum(1), (many == 2).sum(1)}, 1).to(at::kDouble) / 4096;
  expect(close(freq, all.exp(), 0.05), "tree_sample frequencies against exp(log_prob_all)");
  // autograd: log_prob through the C++ kernel against the same formula in ATen (z, weights and biases)
  const T lab = at::tensor({int64_t(0), int64_t(2), int64_t(1), int64_t(1)}).view({2, 2});
  const T up = at::tensor({1.0, -2.0, 0.5, 3.0}, at::kDouble).view({2, 2});  // a weighted sum: backward scales
  T grads[2][3];
  for (int ref = 0; ref < 2; ++ref) {
    T zz = z.clone().set_requires_grad(true), ww = w.clone().set_requires_grad(true);
    T bb = b.clone().set_requires_grad(true);
    T out;
    if (ref) {
      const T r0 = at::mv(zz, ww[0]) + bb[0], r1 = at::mv(zz, ww[1]) + bb[1];
      out = at::stack({at::log_sigmoid(-r0) + at::log_sigmoid(-r1), at::log_sigmoid(-r0) + at::log_sigmoid(r1),
                       at::log_sigmoid(r0)}, 1).index_select(1, label_to_leaf).gather(1, lab);
    } else {
      out = log_prob.call(zz, ww, bb, label_to_leaf, lab);
    }
    (out * up).sum().backward();
    grads[ref][0] = zz.grad(), grads[ref][1] = ww.grad(), grads[ref][2] = bb.grad();
  }
  expect(close(grads[0][0], grads[1][0]), "tree_log_prob backward: z");
  expect(close(grads[0][1], grads[1][1]), "tree_log_prob backward: node_weight");
  expect(close(grads[0][2], grads[1][2]), "tree_log_prob backward: node_bias");
  // not differentiable: the draws' log q never requires grad (the node parameters are trained ones in a sampler)
  const T wp = w.clone().set_requires_grad(true);
  expect(!std::get<1>(sample.call(z, wp, b, leaf_to_label, 3, 4, 0)).requires_grad(),
         "tree_sample output does not require grad");
}

}  // namespace

int main() {
  sparsemax_family();
  zlpr_family();
  tree_family();
  if (failures) return 1;
  std::printf("torchxc C++ smoke test: ok\n");
  return 0;
}
