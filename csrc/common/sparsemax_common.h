// Input validation and layout helpers shared by the CPU and CUDA sparsemax kernels: every check that
// guards the op boundary lives here once, so both backends reject bad input with the same message.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <vector>

#include "sparsemax_threshold.h"

namespace torchxc {

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

inline void check_float_input(const at::Tensor& x, const char* op, const char* name) {
  TORCH_CHECK(is_supported_float(x.scalar_type()), op, ": expected ", name,
              " of dtype float16, bfloat16, float32 or float64, but got ", x.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op, const char* name_a,
                              const char* name_b) {
  TORCH_CHECK(a.device() == b.device(), op, ": expected ", name_a, " and ", name_b,
              " on the same device, but got ", name_a, " on ", a.device(), " and ", name_b, " on ", b.device());
}

// Wraps `dim` for a tensor of rank `ndim`; a 0-d tensor behaves like a 1-element vector (as in softmax).
inline int64_t wrap_dim(int64_t dim, int64_t ndim, const char* op) {
  const int64_t rank = ndim == 0 ? 1 : ndim;
  TORCH_CHECK_INDEX(dim >= -rank && dim < rank, op, ": dim must be in [", -rank, ", ", rank - 1,
                    "] for a tensor with ", ndim, " dimensions, but got dim=", dim);  // IndexError, as softmax
  return dim < 0 ? dim + rank : dim;
}

// A tensor seen as contiguous rows along `dim`: rows2d is [rows, d]. The result of a row kernel written
// into a [rows, d] tensor is mapped back with `unflatten`, which returns a view whose layout matches what
// the fake (meta) implementation in python/torchxc/sparsemax.py produces.
struct RowLayout {
  at::Tensor rows2d;
  std::vector<int64_t> moved_shape;  // input shape with `dim` moved last
  int64_t dim = 0;
  int64_t rows = 0;
  int64_t d = 0;
  bool scalar = false;

  static RowLayout make(const at::Tensor& x, int64_t dim, const char* op) {
    RowLayout r;
    r.scalar = x.dim() == 0;
    r.dim = wrap_dim(dim, x.dim(), op);
    at::Tensor moved = r.scalar ? x.reshape({1}) : x.movedim(r.dim, -1);
    r.moved_shape = moved.sizes().vec();
    r.d = r.moved_shape.back();
    r.rows = r.d == 0 ? 0 : moved.numel() / r.d;
    r.rows2d = moved.contiguous().view({r.rows, r.d});
    return r;
  }

  at::Tensor unflatten(const at::Tensor& out2d) const {
    at::Tensor out = out2d.view(moved_shape);
    return scalar ? out.view(at::IntArrayRef{}) : out.movedim(-1, dim);  // {} alone would pick view(dtype)
  }
};

// Newton steps before the threshold search falls back to bisection. The environment variable exists for the
// tests, which set it to 0 to run the bisection path on every input.
inline int sparsemax_max_newton() {
  const char* s = std::getenv("TORCHXC_SPARSEMAX_MAX_NEWTON");
  return s ? std::atoi(s) : kSparsemaxMaxNewton;
}

// ---- sparsemax_loss boundary checks --------------------------------------------------------------------
// input [..., C] (classes last); target int64 [...] (class indices, `ignore_index` skips a row) or a float
// tensor [..., C] of the input's dtype (non-negative label weights, normalised per row; all-zero rows skipped).
inline bool check_sparsemax_loss_inputs(const at::Tensor& input, const at::Tensor& target, const char* op) {
  check_float_input(input, op, "input");
  TORCH_CHECK(input.dim() >= 1, op, ": expected input with at least 1 dimension (classes last), but got a 0-d tensor");
  check_same_device(input, target, op, "input", "target");
  if (target.scalar_type() == at::kLong) {
    TORCH_CHECK(target.dim() == input.dim() - 1 &&
                    target.sizes() == input.sizes().slice(0, input.dim() - 1),
                op, ": class-index target must have the input's shape without the class dimension ",
                input.sizes().slice(0, input.dim() - 1), ", but got ", target.sizes());
    return true;
  }
  TORCH_CHECK(target.scalar_type() == input.scalar_type(), op,
              ": expected target of dtype int64 (class indices) or ", input.scalar_type(),
              " (label weights, same dtype as input), but got ", target.scalar_type());
  TORCH_CHECK(target.sizes() == input.sizes(), op, ": label-weight target must have the input's shape ",
              input.sizes(), ", but got ", target.sizes());
  return false;
}

inline at::ScalarType stats_dtype(at::ScalarType input) {
  return input == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_sparsemax_backward_inputs(const at::Tensor& grad_output, const at::Tensor& output, const char* op) {
  check_float_input(output, op, "output");
  check_same_device(grad_output, output, op, "grad_output", "output");
  TORCH_CHECK(grad_output.scalar_type() == output.scalar_type(), op,
              ": expected grad_output and output of the same dtype, but got ", grad_output.scalar_type(), " and ",
              output.scalar_type());
  TORCH_CHECK(grad_output.sizes() == output.sizes(), op, ": expected grad_output of shape ", output.sizes(),
              " (the output's), but got ", grad_output.sizes());
}

// The validated inputs of sparsemax_loss with its (uninitialised) outputs: loss [...] and stats [..., 3].
struct SparsemaxLossProblem {
  bool index_target;
  int64_t rows, d;
  at::Tensor x, target, loss, stats;  // x and target contiguous

  static SparsemaxLossProblem make(const at::Tensor& input, const at::Tensor& target, const char* op) {
    SparsemaxLossProblem p;
    p.index_target = check_sparsemax_loss_inputs(input, target, op);
    const auto batch = input.sizes().slice(0, input.dim() - 1);
    p.d = input.size(-1);
    p.rows = c10::multiply_integers(batch);
    TORCH_CHECK(p.d > 0 || p.rows == 0, op, ": expected at least one class, but got input of shape ", input.sizes());
    std::vector<int64_t> stats_shape(batch.begin(), batch.end());
    stats_shape.push_back(3);
    p.loss = at::empty(batch, input.options());
    p.stats = at::empty(stats_shape, input.options().dtype(stats_dtype(input.scalar_type())));
    p.x = input.contiguous();
    p.target = target.contiguous();
    return p;
  }
};

// The validated inputs of sparsemax_loss_backward (contiguous; grad_loss in the stats' dtype) and its output.
struct SparsemaxLossBackwardProblem {
  bool index_target;
  int64_t rows, d;
  at::Tensor x, target, stats, grad_loss, grad;

  static SparsemaxLossBackwardProblem make(const at::Tensor& grad_loss, const at::Tensor& input,
                                           const at::Tensor& target, const at::Tensor& stats, const char* op) {
    SparsemaxLossBackwardProblem p;
    p.index_target = check_sparsemax_loss_inputs(input, target, op);
    const auto batch = input.sizes().slice(0, input.dim() - 1);
    TORCH_CHECK(grad_loss.sizes() == batch, op, ": expected grad_loss of shape ", batch, ", but got ",
                grad_loss.sizes());
    // a complex grad_loss was cast to the stats' dtype with its imaginary part dropped, an integer one as is
    TORCH_CHECK(at::isFloatingType(grad_loss.scalar_type()), op, ": expected a floating-point grad_loss, but got ",
                grad_loss.scalar_type());
    TORCH_CHECK(input.size(-1) > 0 || c10::multiply_integers(batch) == 0, op,
                ": expected at least one class (as sparsemax_loss), but got input of shape ", input.sizes());
    TORCH_CHECK(stats.dim() == input.dim() && stats.sizes().slice(0, input.dim() - 1) == batch &&
                    stats.size(-1) == 3 && stats.scalar_type() == stats_dtype(input.scalar_type()),
                op, ": stats must be the second output of sparsemax_loss for this input");
    check_same_device(input, grad_loss, op, "input", "grad_loss");
    check_same_device(input, stats, op, "input", "stats");
    p.d = input.size(-1);
    p.rows = c10::multiply_integers(batch);
    p.grad = at::empty(input.sizes(), input.options());
    p.x = input.contiguous();
    p.target = target.contiguous();
    p.stats = stats.contiguous();
    p.grad_loss = grad_loss.to(stats.scalar_type()).contiguous();
    return p;
  }
};

}  // namespace torchxc
