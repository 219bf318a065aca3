// The torchxc operator library: every op's schema, and nothing else. Kernels register themselves per backend
// in csrc/cpu/<family>_cpu.cpp and csrc/cuda/<family>_cuda.cu, autograd in csrc/autograd/<family>_autograd.cpp;
// Python wrappers and fake (meta) kernels live in python/torchxc/<family>.py.
#include <torch/library.h>

TORCH_LIBRARY(torchxc, m) {
  // ---- sparsemax family (python/torchxc/sparsemax.py) ----
  // Euclidean projection of each slice along `dim` onto the probability simplex: max(input - tau, 0).
  m.def("sparsemax(Tensor input, int dim=-1) -> Tensor");
  // Vector-Jacobian product of sparsemax, from its output: s * (grad - mean over s of grad), s = output > 0.
  m.def("sparsemax_backward(Tensor grad_output, Tensor output, int dim=-1) -> Tensor");
  // Per-row sparsemax loss with classes on the last dim. target: int64 class indices (input's shape without
  // the class dim; rows equal to ignore_index are skipped) or label weights shaped like input (normalised
  // per row; all-zero rows are skipped). Returns (loss [...], stats [..., 3] = (row max, tau - row max,
  // target mass)); stats feed the backward and mark skipped rows by a zero target mass.
  m.def("sparsemax_loss(Tensor input, Tensor target, int ignore_index=-100) -> (Tensor loss, Tensor stats)");
  // Gradient of sum(grad_loss * loss) with respect to input: grad_loss * (sparsemax(input) - q).
  m.def("sparsemax_loss_backward(Tensor grad_loss, Tensor input, Tensor target, Tensor stats) -> Tensor");

  // ---- ZLPR loss (python/torchxc/zlpr.py) ----
  // Per-row ZLPR loss with classes last; target bool (hard) or the input's float dtype (soft, in [0, 1]); mask
  // None, bool like input, or bool [C]. Returns (loss [...], grad): grad = grad_scale * dloss/dinput, computed in
  // the same pass when compute_grad (else an empty tensor), so that the backward only scales it. When the graph is
  // freed, the input's gradient is this very tensor: handed on as is where the incoming gradient equals grad_scale
  // (a mean with grad_scale 1 / rows, a sum with 1), its other rows scaled in place (_zlpr_scale_grad_).
  m.def("zlpr_loss(Tensor input, Tensor target, Tensor? mask=None, bool compute_grad=True, float grad_scale=1.0) -> (Tensor loss, Tensor grad)");
  // The same with positives int64 [..., P]: positive class indices padded with -1 (duplicates count once).
  m.def("zlpr_loss_sparse(Tensor input, Tensor positives, Tensor? mask=None, bool compute_grad=True, float grad_scale=1.0) -> (Tensor loss, Tensor grad)");
  // The backward's in-place scaling of a stored gradient it owns (csrc/autograd/zlpr_autograd.cpp): each row r of
  // grad [..., C] (contiguous) is multiplied by grad_loss[r] / grad_scale where grad_loss[r] != grad_scale; rows
  // whose incoming gradient equals grad_scale are left as they are; on a GPU they are not even read (the usual mean
  // or sum: the whole call reads grad_loss alone, with no host sync to find that out).
  m.def("_zlpr_scale_grad_(Tensor(a!) grad, Tensor grad_loss, float grad_scale) -> ()");

  // Whether the backward now running keeps its graph (retain_graph); fused_linear_zlpr's Python backward asks.
  m.def("_backward_keeps_graph() -> bool");
  // Called by that backward under create_graph=True: `grads` (its results) linked to a node that raises `msg` when
  // differentiated (link_double_backward_error in csrc/autograd/autograd_common.h).
  m.def("_double_backward_error(Tensor[] grads, Tensor[] incoming, str msg) -> Tensor[]");

  // ---- adversarial tree sampler (python/torchxc/sampling.py; tree in csrc/common/tree_common.h) ----
  // num_samples independent draws per row of z [B, k] from q(. | z): (labels int64 [B, S], log q [B, S]). The
  // draws are a function of (seed, row, sample) alone (Philox counters).
  m.def("tree_sample(Tensor z, Tensor node_weight, Tensor node_bias, Tensor leaf_to_label, int num_labels, int num_samples, int seed) -> (Tensor labels, Tensor log_q)");
  // log q(labels | z) for labels int64 [B, P]; label_to_leaf [C] is the inverse of leaf_to_label.
  m.def("tree_log_prob(Tensor z, Tensor node_weight, Tensor node_bias, Tensor label_to_leaf, Tensor labels) -> Tensor");
  m.def("tree_log_prob_backward(Tensor grad, Tensor z, Tensor node_weight, Tensor node_bias, Tensor label_to_leaf, Tensor labels) -> (Tensor grad_z, Tensor grad_node_weight, Tensor grad_node_bias)");
  // log q(y | z) for every label: [B, C].
  m.def("tree_log_prob_all(Tensor z, Tensor node_weight, Tensor node_bias, Tensor label_to_leaf) -> Tensor");
  // TreeSampler.fit's solver (CPU only; csrc/cpu/tree_fit_cpu.cpp): `steps` Newton steps of one L2-regularised
  // logistic regression per node (weights and bias: theta [nodes, k + 1], bias last) over z [E, k] sorted by node
  // (node n: rows offsets[n] .. offsets[n + 1]) toward target [E]. Returns (theta, margins [E] under that theta).
  m.def("tree_fit_newton(Tensor z, Tensor offsets, Tensor theta, Tensor target, Tensor reg, int steps, float max_step) -> (Tensor theta, Tensor margins)");
}
