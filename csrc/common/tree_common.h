// The label tree of the adversarial sampler (Bamler & Mandt, ICLR 2020), shared by its CPU and CUDA kernels.
//
// C labels, depth D = ceil(log2 C) (0 for C = 1). Internal nodes in heap order: root 0, children of i are 2i+1
// (left) and 2i+2 (right); 2^D - 1 of them. Leaves are numbered 0..2^D-1 left to right; leaf j < C holds label
// leaf_to_label[j], leaves >= C are padding. Node i has weights w_i (k values) and bias b_i, and
// P(right | z) = sigmoid(w_i . z + b_i) -- unless the right subtree holds only padding, in which case the walk goes
// left with probability 1 (and that level adds nothing to log q). q(y | z) is the product of the branch
// probabilities on the path to y's leaf.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>

#include "philox.h"
#include "sparsemax_common.h"

namespace torchxc {

inline int64_t tree_depth(int64_t num_labels) {
  int64_t d = 0;
  while ((int64_t(1) << d) < num_labels) ++d;
  return d;
}

// Checks z [B, k], node_weight [2^D - 1, k], node_bias [2^D - 1] for C labels; returns D.
inline int64_t check_tree_inputs(const at::Tensor& z, const at::Tensor& weight, const at::Tensor& bias,
                                 int64_t num_labels, const char* op) {
  TORCH_CHECK(z.scalar_type() == at::kFloat || z.scalar_type() == at::kDouble, op,
              ": expected z of dtype float32 or float64, but got ", z.scalar_type());
  TORCH_CHECK(z.dim() == 2, op, ": expected z of shape [B, k], but got ", z.sizes());
  TORCH_CHECK(weight.scalar_type() == z.scalar_type() && bias.scalar_type() == z.scalar_type(), op,
              ": expected node_weight and node_bias of z's dtype ", z.scalar_type(), ", but got ",
              weight.scalar_type(), " and ", bias.scalar_type());
  check_same_device(z, weight, op, "z", "node_weight");
  check_same_device(z, bias, op, "z", "node_bias");
  TORCH_CHECK(num_labels >= 1 && num_labels <= (int64_t(1) << 40), op, ": expected 1 <= num_labels <= 2^40, but got ",
              num_labels);
  const int64_t depth = tree_depth(num_labels);
  const int64_t nodes = (int64_t(1) << depth) - 1;
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == nodes && weight.size(1) == z.size(1), op,
              ": expected node_weight of shape [", nodes, ", ", z.size(1), "] (2^D - 1 nodes for ", num_labels,
              " labels, k matching z), but got ", weight.sizes());
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == nodes, op, ": expected node_bias of shape [", nodes, "], but got ",
              bias.sizes());
  return depth;
}

// tree_sample's other arguments: num_samples draws per row, leaf_to_label int64 [2^D] on z's device.
inline void check_sample_inputs(const at::Tensor& z, const at::Tensor& leaf_to_label, int64_t depth,
                                int64_t num_samples, const char* op) {
  // the sample index is a 32-bit word of the Philox counter: draws s and s + 2^32 of a row would be equal
  TORCH_CHECK(num_samples >= 0 && num_samples <= (int64_t(1) << 32), op,
              ": expected 0 <= num_samples <= 2^32 (the sample index is a 32-bit Philox counter word), but got ",
              num_samples);
  TORCH_CHECK(leaf_to_label.scalar_type() == at::kLong && leaf_to_label.dim() == 1 &&
                  leaf_to_label.size(0) == (int64_t(1) << depth),
              op, ": expected leaf_to_label int64 of shape [", int64_t(1) << depth, "], but got ",
              leaf_to_label.scalar_type(), " ", leaf_to_label.sizes());
  check_same_device(z, leaf_to_label, op, "z", "leaf_to_label");
}

// The log-prob ops' inputs: label_to_leaf [C] (int64, one dimension, on z's device; C from its length) and the tree
// for C labels (check_tree_inputs). Returns the depth.
inline int64_t check_log_prob_inputs(const at::Tensor& z, const at::Tensor& weight, const at::Tensor& bias,
                                     const at::Tensor& label_to_leaf, const char* op) {
  TORCH_CHECK(label_to_leaf.scalar_type() == at::kLong && label_to_leaf.dim() == 1, op,
              ": expected label_to_leaf int64 of shape [C], but got ", label_to_leaf.scalar_type(), " ",
              label_to_leaf.sizes());
  check_same_device(z, label_to_leaf, op, "z", "label_to_leaf");
  TORCH_CHECK(label_to_leaf.size(0) >= 1, op, ": expected label_to_leaf with one entry per label (C >= 1), but got "
              "an empty tensor");
  return check_tree_inputs(z, weight, bias, label_to_leaf.size(0), op);
}

// tree_log_prob_backward's incoming gradient: real floating point (a complex one would lose its imaginary part), of
// the labels' shape.
inline void check_log_prob_grad(const at::Tensor& grad, const at::Tensor& labels, const char* op) {
  TORCH_CHECK(grad.sizes() == labels.sizes(), op, ": expected grad of the labels' shape ", labels.sizes(),
              ", but got ", grad.sizes());
  TORCH_CHECK(at::isFloatingType(grad.scalar_type()), op, ": expected a floating-point grad, but got ",
              grad.scalar_type());
}

// The error of a label_to_leaf that is not a permutation of the leaves 0 .. C - 1 (tree_log_prob_all).
inline std::string not_a_permutation_message(const char* op, int64_t num_labels) {
  return std::string(op) + ": label_to_leaf must be a permutation of the leaves 0 .. C - 1 = " +
         std::to_string(num_labels - 1) + " (leaves C .. 2^depth - 1 are padding)";
}

// Whether the right child of the node at `level`, position p within the level, holds only padding leaves.
C10_HOST_DEVICE inline bool right_child_empty(int64_t p, int64_t level, int64_t depth, int64_t num_labels) {
  return ((2 * p + 1) << (depth - level - 1)) >= num_labels;
}

// log(1 + e^x), without overflow.
template <typename T>
C10_HOST_DEVICE inline T softplus(T x) {
  return x > T(0) ? x + ::log1p(::exp(-x)) : ::log1p(::exp(x));
}

// Branch choice at a node with logit x. With a = e^{-|x|}, the less likely branch (left when x >= 0) has probability
// eps = a / (1 + a) <= 1/2, and the walk takes it iff its uniform u < eps. Level l gets u's first 16 bits from its
// Philox block (tree_level_bits), u in [k 2^-16, (k + 1) 2^-16); they decide unless eps lies inside that interval
// (probability 2^-16), and then u's next bits come from a Philox block of the walk's own (tree_refine_unlikely).
// So a branch is taken with its probability eps however small eps is, and one Philox block serves eight levels.
constexpr int64_t kTreeLevelsPerBlock = 8;         // levels l share the Philox block with counter l / 8
constexpr uint32_t kRefineCounter = 0x80000000u;  // Philox counter word of the refinement blocks

static_assert(kTreeLevelsPerBlock == 2 * 4, "a Philox4x32 block holds eight 16-bit levels (tree_level_bits)");

// u's first 16 bits at level l: half (l % 2, low half first) of word (l % 8) / 2 of the level's Philox block.
C10_HOST_DEVICE inline uint32_t tree_level_bits(uint32_t word, int64_t level) {
  return (word >> (16 * (level & 1))) & 0xFFFFu;
}

// r = (eps - k 2^-16) 2^16 in (0, 1): where eps lies in u's interval. Whether the rest of u is below r, from up to
// four more 32-bit words (u to 144 bits).
C10_HOST_DEVICE inline bool tree_refine_unlikely(double r, uint64_t seed, uint32_t sample, uint32_t row,
                                                 uint32_t row_hi, int64_t level) {
  const Philox4x32 w = philox4x32(seed, sample, row, kRefineCounter | static_cast<uint32_t>(level), row_hi);
  for (int i = 0; i < 4; ++i) {
    r *= 4294967296.0;  // the next 32 bits of u, j, against r 2^32
    const double j = static_cast<double>(w.v[i]);
    if (j + 1.0 <= r) return true;
    if (j >= r) return false;
    r -= j;
  }
  return false;  // eps within 2^-144 of an interval end
}

// Whether the walk takes the less likely branch: u < eps, u's first 16 bits `bits` (tree_level_bits).
template <typename T>
C10_HOST_DEVICE inline bool tree_take_unlikely(T eps, uint32_t bits, uint64_t seed, uint32_t sample, uint32_t row,
                                               uint32_t row_hi, int64_t level) {
  const T lo = static_cast<T>(bits) * T(1.0 / 65536.0), hi = static_cast<T>(bits + 1) * T(1.0 / 65536.0);
  if (!(lo < eps)) return false;
  if (hi <= eps) return true;
  return tree_refine_unlikely((static_cast<double>(eps) - static_cast<double>(lo)) * 65536.0, seed, sample, row,
                              row_hi, level);
}

template <typename T>
C10_HOST_DEVICE inline T tree_logit(const T* __restrict__ z, const T* __restrict__ weight, const T* __restrict__ bias,
                                    int64_t node, int64_t k) {
  T s = bias[node];
  const T* w = weight + node * k;
  for (int64_t j = 0; j < k; ++j) s += w[j] * z[j];
  return s;
}

// Draw `sample` of row `row` from q(. | z): returns the leaf and its log-probability. Level l uses 16 bits of the
// Philox block with counter (sample, row, l / 8) (and, rarely, a refinement block: tree_take_unlikely):
// a draw depends on (seed, row, sample) alone -- not on the thread that computes it, nor on how many samples the
// call asks for.
template <typename T>
C10_HOST_DEVICE inline int64_t tree_draw(const T* z, const T* weight, const T* bias, int64_t k, int64_t depth,
                                         int64_t num_labels, uint64_t seed, uint64_t row, uint64_t sample, T* log_q) {
  int64_t node = 0;
  T lq = 0;
  Philox4x32 r{{0, 0, 0, 0}};
  for (int64_t l = 0; l < depth; ++l) {
    if (l % kTreeLevelsPerBlock == 0) {
      r = philox4x32(seed, static_cast<uint32_t>(sample), static_cast<uint32_t>(row),
                     static_cast<uint32_t>(l / kTreeLevelsPerBlock), static_cast<uint32_t>(row >> 32));
    }
    const int64_t p = node - ((int64_t(1) << l) - 1);
    int64_t right = 0;
    if (!right_child_empty(p, l, depth, num_labels)) {
      const T logit = tree_logit(z, weight, bias, node, k);
      const T a = ::exp(-::fabs(logit));
      const uint32_t bits = tree_level_bits(r.v[(l % kTreeLevelsPerBlock) / 2], l);
      const bool unlikely = tree_take_unlikely(a / (T(1) + a), bits, seed, static_cast<uint32_t>(sample),
                                               static_cast<uint32_t>(row), static_cast<uint32_t>(row >> 32), l);
      right = unlikely != (logit >= T(0));  // NaN: left
      lq -= softplus(right ? -logit : logit);
    }
    node = 2 * node + 1 + right;
  }
  *log_q = lq;
  return node - ((int64_t(1) << depth) - 1);
}

// log q(leaf | z); with nodes/coef (depth entries each), also the nodes on the path and d log q / d logit there
// (0 where the walk was forced).
template <typename T>
C10_HOST_DEVICE inline T tree_path(const T* z, const T* weight, const T* bias, int64_t k, int64_t depth,
                                   int64_t num_labels, int64_t leaf, int64_t* nodes, T* coef) {
  int64_t node = 0;
  T lq = 0;
  for (int64_t l = 0; l < depth; ++l) {
    const int64_t p = node - ((int64_t(1) << l) - 1);
    const int64_t right = (leaf >> (depth - 1 - l)) & 1;
    T c = 0;
    if (!right_child_empty(p, l, depth, num_labels)) {
      const T logit = tree_logit(z, weight, bias, node, k);
      lq -= softplus(right ? -logit : logit);
      c = right ? T(1) / (T(1) + ::exp(logit)) : -T(1) / (T(1) + ::exp(-logit));  // sigmoid(-x), -sigmoid(x)
    }
    if (nodes) {
      nodes[l] = node;
      coef[l] = c;
    }
    node = 2 * node + 1 + right;
  }
  return lq;
}

// The gradients of sum(grad * log q) wrt z, node_weight and node_bias, from the path nodes and coefficients
// [B, P, D] (d log q / d logit per level) that the CPU and CUDA kernels compute (csrc/composite/tree_sampler.cpp).
std::tuple<at::Tensor, at::Tensor, at::Tensor> tree_grads_from_paths(const at::Tensor& grad, const at::Tensor& z,
                                                                     const at::Tensor& weight,
                                                                     const at::Tensor& nodes, const at::Tensor& coef);

}  // namespace torchxc
