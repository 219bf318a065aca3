// Boundary checks and outputs of the ZLPR ops, shared by the CPU and CUDA kernels.
//
// ZLPR (Su et al., arXiv 2208.02955), classes on the last dim, per row:
//   L = log(1 + sum_i w_i e^{s_i}) + log(1 + sum_i t_i e^{-s_i}),   w_i = 1 - t_i,
// where hard labels have t_i in {0, 1} and soft labels t_i in [0, 1]. A class with t_i = 1 is excluded from the
// first sum and one with t_i = 0 from the second, exactly (the weights are 0, not an epsilon). Masked classes
// (mask False) and -inf scores are excluded from both sums. The kernels evaluate both terms as log-sum-exps with
// their own maximum, so scores of any magnitude stay finite, and compute the gradient
//   dL/ds_i = w_i e^{s_i} / (1 + sum w e^s) - t_i e^{-s_i} / (1 + sum t e^{-s})
// in the same pass (stored when compute_grad, so that the backward only scales it).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>
#include <vector>

#include "sparsemax_common.h"

namespace torchxc {

// How a row's labels are given to the kernels.
enum class ZlprLabels {
  kHard,  // bool tensor like the input
  kSoft,  // float tensor like the input, values in [0, 1]
  kBits,  // bitmask [rows, ceil(C / 32)] built from sparse positive indices
};

// grad_scale of the ZLPR ops: finite and non-zero, also as the float32 the kernels of float32 / 16-bit tensors
// multiply (the forward) or divide (the backward's _zlpr_scale_grad_) by.
inline void check_grad_scale(double grad_scale, at::ScalarType dtype, const char* op) {
  TORCH_CHECK(std::isfinite(grad_scale) && grad_scale != 0.0, op, ": expected a finite, non-zero grad_scale, but got ",
              grad_scale);
  const float grad_scale_f = static_cast<float>(grad_scale);
  TORCH_CHECK(dtype == at::kDouble || (std::isfinite(grad_scale_f) && grad_scale_f != 0.0f), op, ": grad_scale ",
              grad_scale, " is not a finite, non-zero float32, in which ", dtype, " input is computed");
}

struct ZlprProblem {
  int64_t rows = 0, d = 0;
  at::Tensor x;           // [rows * d] contiguous scores
  at::Tensor labels;      // dense target (contiguous) or positives [rows, P] (contiguous)
  at::Tensor mask;        // undefined, or contiguous bool of d (class mask) or rows * d elements
  bool mask_per_row = false;
  at::Tensor loss, grad;  // outputs: loss [...], grad like input (or empty when not computed)
  double grad_scale = 1.0;  // the stored gradient is grad_scale * dloss/dinput

  static ZlprProblem make(const at::Tensor& input, const at::Tensor& labels, const c10::optional<at::Tensor>& mask,
                          bool compute_grad, double grad_scale, bool sparse, const char* op) {
    check_float_input(input, op, "input");
    check_grad_scale(grad_scale, input.scalar_type(), op);
    TORCH_CHECK(input.dim() >= 1, op, ": expected input with at least 1 dimension (classes last), but got a 0-d tensor");
    check_same_device(input, labels, op, "input", sparse ? "positives" : "target");
    const auto batch = input.sizes().slice(0, input.dim() - 1);
    if (sparse) {
      TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": expected positives of dtype int64, but got ",
                  labels.scalar_type());
      if (!(labels.dim() == input.dim() && labels.sizes().slice(0, input.dim() - 1) == batch)) {
        std::string want = "[";  // [2, 3, P], not [[2, 3], P]
        for (const int64_t n : batch) want += std::to_string(n) + ", ";
        TORCH_CHECK(false, op, ": expected positives of shape ", want, "P] (the input's leading dims, then the padded "
                    "list of positive classes), but got ", labels.sizes());
      }
    } else {
      TORCH_CHECK(labels.scalar_type() == at::kBool || labels.scalar_type() == input.scalar_type(), op,
                  ": expected target of dtype bool (hard labels) or ", input.scalar_type(),
                  " (soft labels, the input's dtype), but got ", labels.scalar_type());
      TORCH_CHECK(labels.sizes() == input.sizes(), op, ": expected target of the input's shape ", input.sizes(),
                  ", but got ", labels.sizes());
    }
    ZlprProblem p;
    p.d = input.size(-1);
    p.rows = c10::multiply_integers(batch);
    if (mask.has_value() && mask->defined()) {
      check_same_device(input, *mask, op, "input", "mask");
      TORCH_CHECK(mask->scalar_type() == at::kBool, op, ": expected mask of dtype bool, but got ", mask->scalar_type());
      p.mask_per_row = mask->sizes() == input.sizes();
      TORCH_CHECK(p.mask_per_row || (mask->dim() == 1 && mask->size(0) == p.d), op,
                  ": expected mask of the input's shape ", input.sizes(), " or of shape [", p.d,
                  "] (one flag per class), but got ", mask->sizes(), " (torchxc.zlpr_loss broadcasts other shapes)");
      p.mask = mask->contiguous();
    }
    p.grad_scale = grad_scale;
    p.x = input.contiguous();
    p.labels = labels.contiguous();
    p.loss = at::empty(batch, input.options());
    p.grad = compute_grad ? at::empty(input.sizes(), input.options()) : at::empty({0}, input.options());
    return p;
  }
};

// Arguments of _zlpr_scale_grad_(grad, grad_loss, grad_scale): checked, with grad_loss as one value per row (an
// expanded scalar keeps its zero stride: a mean's incoming gradient is not copied).
struct ZlprScaleProblem {
  int64_t rows = 0, d = 0;
  at::Tensor go;      // [rows], any stride
  int64_t go_stride = 0;

  static ZlprScaleProblem make(const at::Tensor& grad, const at::Tensor& grad_loss, double grad_scale) {
    constexpr const char* op = "torchxc::_zlpr_scale_grad_";
    check_float_input(grad, op, "grad");
    TORCH_CHECK(grad_loss.scalar_type() == grad.scalar_type(), op, ": expected grad_loss of the gradient's dtype ",
                grad.scalar_type(), ", but got ", grad_loss.scalar_type());
    check_same_device(grad, grad_loss, op, "grad", "grad_loss");
    TORCH_CHECK(grad.dim() >= 1 && grad.is_contiguous(), op,
                ": expected a contiguous gradient with at least 1 dimension, but got sizes ", grad.sizes(),
                " and strides ", grad.strides());
    const auto batch = grad.sizes().slice(0, grad.dim() - 1);
    TORCH_CHECK(grad_loss.sizes() == batch, op, ": expected grad_loss of shape ", batch,
                " (the gradient's leading dims), but got ", grad_loss.sizes());
    check_grad_scale(grad_scale, grad.scalar_type(), op);
    TORCH_CHECK(!grad_loss.is_alias_of(grad), op,
                ": expected grad_loss in memory apart from grad (it is read while grad is scaled in place)");
    ZlprScaleProblem p;
    p.d = grad.size(-1);
    p.rows = c10::multiply_integers(batch);
    p.go = grad_loss.reshape({p.rows});
    p.go_stride = p.rows > 1 ? p.go.stride(0) : 0;
    return p;
  }
};

}  // namespace torchxc
