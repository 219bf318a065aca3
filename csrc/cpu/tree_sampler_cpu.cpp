// CPU kernels of the adversarial tree sampler (tree definition in csrc/common/tree_common.h): sampling, log q of
// given labels and its backward. Examples run in parallel; a draw costs D dot products of length k.
//
// Sampling in float32 walks a block of draws level by level (structure of arrays): the dot products of all the
// block's walks at one level are independent, so their node loads overlap instead of each walk waiting on its
// own chain of cache misses, and the branch decisions, random numbers and probabilities are vectorized loops.
// The probability of the path is a running product in double, renormalized every 4 levels (exponent kept
// apart), with one logarithm per draw at the end. float64 uses the scalar walk of tree_common.h. Both compare
// the same uniform (Philox counter (sample, row, level / 4)) with sigmoid_right(logit).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "../common/tree_common.h"
#include "simd.h"
#include "vec_math.h"

namespace torchxc {
namespace {

constexpr int64_t kWalkBlock = 512;  // draws walked together by one thread

// Keeps prod in [1, 2) and adds its binary exponent to expo (prod > 0 and normal).
TORCHXC_ALWAYS_INLINE void renormalize(double& prod, int64_t& expo) {
  const uint64_t bits = __builtin_bit_cast(uint64_t, prod);
  expo += static_cast<int64_t>((bits >> 52) & 0x7ff) - 1023;
  prod = __builtin_bit_cast(double, (bits & 0x000fffffffffffffull) | (1023ull << 52));
}

// logit[i] = weight[node[i]] . z[row[i]] + bias[node[i]] for the n walks of a block: one line of each walk's
// node weights per 16 values of k, a masked tail, and a tree sum of the 16 lanes.
#if TORCHXC_HAVE_AVX512_COLLECT
const bool kTreeAVX512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");

TORCHXC_AVX512 __attribute__((target("avx512dq"))) void tree_logits_avx512(const float* z, const float* weight,
                                                                             const float* bias, int64_t k,
                                                                             const int64_t* node, const int64_t* zrow,
                                                                             int64_t n, bool prefetch_children,
                                                                             float* logit) {
  const __mmask16 tail = static_cast<__mmask16>((1u << (k % 16)) - 1u);
  const int64_t full = k - k % 16;
  for (int64_t i = 0; i < n; ++i) {
    const float* w = weight + node[i] * k;
    const float* zr = z + zrow[i] * k;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t j = 0; j < full; j += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + j), _mm512_loadu_ps(zr + j), acc);
    if (tail) acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w + full), _mm512_maskz_loadu_ps(tail, zr + full), acc);
    logit[i] = _mm512_reduce_add_ps(acc) + bias[node[i]];
    if (prefetch_children) {  // the next level reads one of the two children: fetch both while this one finishes
      const int64_t child = 2 * node[i] + 1;
      const char* cw = reinterpret_cast<const char*>(weight + child * k);
      for (int64_t b = 0; b < 2 * k * static_cast<int64_t>(sizeof(float)); b += 64) _mm_prefetch(cw + b, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(bias + child), _MM_HINT_T0);
    }
  }
}
#endif

// Draws i0 .. i0+n-1 of the flat [B, S] output (n <= kWalkBlock), float32.
TORCHXC_CPU_MULTIVERSION void tree_sample_block_f32(const float* z, const float* weight, const float* bias, int64_t k,
                                                   int64_t depth, int64_t num_labels, uint64_t seed, int64_t S,
                                                   int64_t i0, int64_t n, const int64_t* leaf_to_label,
                                                   int64_t* labels, float* log_q) {
  alignas(64) int64_t node[kWalkBlock], zrow[kWalkBlock];
  alignas(64) uint32_t row[kWalkBlock], smp[kWalkBlock], hi[kWalkBlock];
  alignas(64) uint32_t rnd[4][kWalkBlock];
  alignas(64) float logit[kWalkBlock];
  alignas(64) double prod[kWalkBlock];
  alignas(64) int64_t expo[kWalkBlock];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t flat = i0 + i;
    const int64_t r = flat / S;
    zrow[i] = r;
    row[i] = static_cast<uint32_t>(r);
    hi[i] = static_cast<uint32_t>(static_cast<uint64_t>(r) >> 32);
    smp[i] = static_cast<uint32_t>(flat - r * S);
    node[i] = 0;
    prod[i] = 1.0;
    expo[i] = 0;
  }
  for (int64_t l = 0; l < depth; ++l) {
    if (l % 4 == 0) {
      TORCHXC_PRAGMA(omp simd)
      for (int64_t i = 0; i < n; ++i) {
        const Philox4x32 r = philox4x32(seed, smp[i], row[i], static_cast<uint32_t>(l / 4), hi[i]);
        rnd[0][i] = r.v[0];
        rnd[1][i] = r.v[1];
        rnd[2][i] = r.v[2];
        rnd[3][i] = r.v[3];
      }
    }
    // independent loads: the walks' cache misses overlap
#if TORCHXC_HAVE_AVX512_COLLECT
    if (kTreeAVX512) {
      tree_logits_avx512(z, weight, bias, k, node, zrow, n, l + 1 < depth, logit);
    } else
#endif
    {
      for (int64_t i = 0; i < n; ++i) {
        const float* w = weight + node[i] * k;
        const float* zr = z + zrow[i] * k;
        float acc = 0.0f;
        for (int64_t j = 0; j < k; ++j) acc += w[j] * zr[j];
        logit[i] = acc + bias[node[i]];
      }
    }
    const int64_t first = (int64_t(1) << l) - 1;
    const int64_t shift = depth - l - 1;
    const uint32_t* u32 = rnd[l % 4];
    TORCHXC_PRAGMA(omp simd)
    for (int64_t i = 0; i < n; ++i) {
      const float x = logit[i];
      const bool pos = x >= 0.0f;
      const float a = vexp(-std::fabs(x));
      const float inv = 1.0f / (1.0f + a);
      const float small = a * inv;
      const float p_right = bsel(pos, inv, small);
      const bool empty = ((2 * (node[i] - first) + 1) << shift) >= num_labels;
      const bool right = (uniform24(u32[i]) < p_right) & !empty;
      const float taken = bsel(empty, 1.0f, bsel(right == pos, inv, small));
      prod[i] *= static_cast<double>(taken);
      node[i] = 2 * node[i] + 1 + static_cast<int64_t>(right);
    }
    if (l % 4 == 3) {
      TORCHXC_PRAGMA(omp simd)
      for (int64_t i = 0; i < n; ++i) renormalize(prod[i], expo[i]);
    }
  }
  const int64_t leaf0 = (int64_t(1) << depth) - 1;
  constexpr double kLn2 = 0.69314718055994530942;
  for (int64_t i = 0; i < n; ++i) {
    labels[i0 + i] = leaf_to_label[node[i] - leaf0];
    log_q[i0 + i] = static_cast<float>(std::log(prod[i]) + static_cast<double>(expo[i]) * kLn2);
  }
}

std::tuple<at::Tensor, at::Tensor> tree_sample_cpu(const at::Tensor& z_in, const at::Tensor& weight_in,
                                                   const at::Tensor& bias_in, const at::Tensor& leaf_to_label_in,
                                                   int64_t num_labels, int64_t num_samples, int64_t seed) {
  constexpr const char* op = "torchxc::tree_sample";
  const int64_t depth = check_tree_inputs(z_in, weight_in, bias_in, num_labels, op);
  TORCH_CHECK(num_samples >= 0, op, ": expected num_samples >= 0, but got ", num_samples);
  TORCH_CHECK(leaf_to_label_in.scalar_type() == at::kLong && leaf_to_label_in.dim() == 1 &&
                  leaf_to_label_in.size(0) == (int64_t(1) << depth),
              op, ": expected leaf_to_label int64 of shape [", int64_t(1) << depth, "], but got ",
              leaf_to_label_in.scalar_type(), " ", leaf_to_label_in.sizes());
  check_same_device(z_in, leaf_to_label_in, op, "z", "leaf_to_label");
  const at::Tensor z = z_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const at::Tensor leaf_to_label = leaf_to_label_in.contiguous();
  const int64_t B = z.size(0), k = z.size(1), S = num_samples;
  at::Tensor labels = at::empty({B, S}, z.options().dtype(at::kLong));
  at::Tensor log_q = at::empty({B, S}, z.options());
  if (z.scalar_type() == at::kFloat) {
    const float* zp = z.const_data_ptr<float>();
    const float* wp = weight.const_data_ptr<float>();
    const float* bp = bias.const_data_ptr<float>();
    const int64_t* l2l = leaf_to_label.const_data_ptr<int64_t>();
    int64_t* lab = labels.mutable_data_ptr<int64_t>();
    float* lq = log_q.mutable_data_ptr<float>();
    at::parallel_for(0, B * S, kWalkBlock, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; i += kWalkBlock) {
        tree_sample_block_f32(zp, wp, bp, k, depth, num_labels, static_cast<uint64_t>(seed), S, i,
                              std::min(kWalkBlock, i1 - i), l2l, lab, lq);
      }
    });
    return {labels, log_q};
  }
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "tree_sample_cpu", [&] {
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    const scalar_t* bp = bias.const_data_ptr<scalar_t>();
    const int64_t* l2l = leaf_to_label.const_data_ptr<int64_t>();
    int64_t* lab = labels.mutable_data_ptr<int64_t>();
    scalar_t* lq = log_q.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, B, std::max<int64_t>(1, 4096 / std::max<int64_t>(S, 1)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t s = 0; s < S; ++s) {
          const int64_t i = b * S + s;
          const int64_t leaf = tree_draw(zp + b * k, wp, bp, k, depth, num_labels, static_cast<uint64_t>(seed),
                                         static_cast<uint64_t>(b), static_cast<uint64_t>(s), lq + i);
          lab[i] = l2l[leaf];
        }
      }
    });
  });
  return {labels, log_q};
}

// The leaves of `labels` [B, P] (checked against C), from label_to_leaf [C].
at::Tensor leaves_of(const at::Tensor& labels, const at::Tensor& label_to_leaf, int64_t num_labels, const char* op) {
  const at::Tensor lab = labels.contiguous();
  const int64_t* lp = lab.const_data_ptr<int64_t>();
  const int64_t* map = label_to_leaf.const_data_ptr<int64_t>();
  at::Tensor leaves = at::empty_like(lab);
  int64_t* out = leaves.mutable_data_ptr<int64_t>();
  const int64_t n = lab.numel();
  at::parallel_for(0, n, 1 << 14, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      TORCH_CHECK(lp[i] >= 0 && lp[i] < num_labels, op, ": label ", lp[i], " is out of range for ", num_labels,
                  " labels");
      out[i] = map[lp[i]];
    }
  });
  return leaves;
}

void check_label_to_leaf(const at::Tensor& z, const at::Tensor& label_to_leaf, const char* op) {
  TORCH_CHECK(label_to_leaf.scalar_type() == at::kLong && label_to_leaf.dim() == 1, op,
              ": expected label_to_leaf int64 of shape [C], but got ", label_to_leaf.scalar_type(), " ",
              label_to_leaf.sizes());
  check_same_device(z, label_to_leaf, op, "z", "label_to_leaf");
}

// log q of labels, and optionally (nodes, coef) [B, P, D] for the backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor> tree_paths_cpu(const at::Tensor& z_in, const at::Tensor& weight_in,
                                                              const at::Tensor& bias_in,
                                                              const at::Tensor& label_to_leaf_in,
                                                              const at::Tensor& labels, bool want_path,
                                                              const char* op) {
  check_label_to_leaf(z_in, label_to_leaf_in, op);
  const int64_t C = label_to_leaf_in.size(0);
  const int64_t depth = check_tree_inputs(z_in, weight_in, bias_in, C, op);
  check_same_device(z_in, labels, op, "z", "labels");
  TORCH_CHECK(labels.scalar_type() == at::kLong && labels.dim() == 2 && labels.size(0) == z_in.size(0), op,
              ": expected labels int64 of shape [", z_in.size(0), ", P], but got ", labels.scalar_type(), " ",
              labels.sizes());
  const at::Tensor z = z_in.contiguous(), weight = weight_in.contiguous(), bias = bias_in.contiguous();
  const at::Tensor leaves = leaves_of(labels, label_to_leaf_in.contiguous(), C, op);
  const int64_t B = z.size(0), P = labels.size(1), k = z.size(1);
  at::Tensor log_q = at::empty({B, P}, z.options());
  at::Tensor nodes = at::empty({want_path ? B : 0, P, depth}, z.options().dtype(at::kLong));
  at::Tensor coef = at::empty({want_path ? B : 0, P, depth}, z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "tree_paths_cpu", [&] {
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    const scalar_t* wp = weight.const_data_ptr<scalar_t>();
    const scalar_t* bp = bias.const_data_ptr<scalar_t>();
    const int64_t* lf = leaves.const_data_ptr<int64_t>();
    scalar_t* lq = log_q.mutable_data_ptr<scalar_t>();
    int64_t* np = want_path ? nodes.mutable_data_ptr<int64_t>() : nullptr;
    scalar_t* cp = want_path ? coef.mutable_data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B, std::max<int64_t>(1, 4096 / std::max<int64_t>(P, 1)), [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        for (int64_t p = 0; p < P; ++p) {
          const int64_t i = b * P + p;
          lq[i] = tree_path(zp + b * k, wp, bp, k, depth, C, lf[i], np ? np + i * depth : nullptr,
                            cp ? cp + i * depth : nullptr);
        }
      }
    });
  });
  return {log_q, nodes, coef};
}

at::Tensor tree_log_prob_cpu(const at::Tensor& z, const at::Tensor& weight, const at::Tensor& bias,
                             const at::Tensor& label_to_leaf, const at::Tensor& labels) {
  return std::get<0>(tree_paths_cpu(z, weight, bias, label_to_leaf, labels, false, "torchxc::tree_log_prob"));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tree_log_prob_backward_cpu(const at::Tensor& grad,
                                                                          const at::Tensor& z,
                                                                          const at::Tensor& weight,
                                                                          const at::Tensor& bias,
                                                                          const at::Tensor& label_to_leaf,
                                                                          const at::Tensor& labels) {
  constexpr const char* op = "torchxc::tree_log_prob_backward";
  TORCH_CHECK(grad.sizes() == labels.sizes(), op, ": expected grad of the labels' shape ", labels.sizes(),
              ", but got ", grad.sizes());
  auto paths = tree_paths_cpu(z, weight, bias, label_to_leaf, labels, true, op);
  return tree_grads_from_paths(grad, z.contiguous(), weight.contiguous(), std::get<1>(paths), std::get<2>(paths));
}

}  // namespace

TORCH_LIBRARY_IMPL(torchxc, CPU, m) {
  m.impl("tree_sample", &tree_sample_cpu);
  m.impl("tree_log_prob", &tree_log_prob_cpu);
  m.impl("tree_log_prob_backward", &tree_log_prob_backward_cpu);
}

}  // namespace torchxc
