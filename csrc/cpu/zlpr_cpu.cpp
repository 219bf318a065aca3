// CPU kernels of the ZLPR loss (math in csrc/common/zlpr_common.h).
//
// Per chunk of 16384 classes of a row, two vectorized passes while the chunk stays in cache: the two maxima
// m_neg = max(0, s_i over the first sum) and m_pos = max(0, -s_i over the second), then the two sums of
// exponentials relative to them; the chunks' sums are merged relative to the row's maxima (an online log-sum-exp
// at chunk granularity, so a long row is read once); then (when the gradient is wanted) a pass writing the
// gradient. Hard labels cost one exponential per class (each class is in exactly one sum), soft labels two. When
// the gradient is wanted, the sum pass also stores its terms (unscaled gradient entries, in the accumulation type:
// in the gradient itself for float32 / float64, in a per-task buffer for 16-bit types), and the gradient pass only
// scales them, with no exponential. Rows run in parallel; a few long rows have their chunks run in parallel
// instead. Sparse positives become a per-row bitmask, after which they are hard labels.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <limits>
#include <type_traits>
#include <vector>

#include "../common/zlpr_common.h"
#include "convert.h"
#include "rows.h"
#include "simd.h"
#include "vec_math.h"

namespace torchxc {
namespace {

// The shortest decimal that reads back as v in T (float or double): a float label of 1.0004 prints as 1.0004, not as
// 1 (the stream's default 6 digits hid 1.0000001) nor as 1.0003999471664429 (its value as a double).
template <typename T>
std::string shortest_repr(T v) {
  char buf[32];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(buf, sizeof buf, "%.*g", p, static_cast<double>(v));
    if (static_cast<T>(std::strtod(buf, nullptr)) == v) break;
  }
  return buf;
}

// Labels of one row (or chunk): exactly one of the pointers is used, chosen by L.
template <typename S>
struct LabelPtr {
  const uint8_t* hard = nullptr;  // bool
  const S* soft = nullptr;
  const uint32_t* bits = nullptr;  // bit i of word i / 32; chunks start at multiples of 32
  LabelPtr offset(int64_t c0) const {
    LabelPtr r = *this;
    if (hard) r.hard += c0;
    if (soft) r.soft += c0;
    if (bits) r.bits += c0 / 32;
    return r;
  }
};

// Every pass works on blocks of kBlock classes: the block's labels are first converted into a local float array
// t[] (0/1 for hard labels and bitmasks), so that the main loops only see float lanes and GCC vectorizes them
// at full width (mixing byte and float lanes makes it fall back to 4-lane vectors even with AVX-512).
constexpr int64_t kBlock = 256;

// A class mask entry, read as a byte and tested != 0: a bool tensor viewed from uint8 can hold other bytes than 0/1
// (read as bool, a 2 would count as False under the & with the -inf test).
TORCHXC_ALWAYS_INLINE bool mask_on(const bool* mask, int64_t i) {
  return reinterpret_cast<const uint8_t*>(mask)[i] != 0;
}

template <ZlprLabels L, typename S>
TORCHXC_ALWAYS_INLINE void load_labels(const LabelPtr<S>& lab, int64_t j, int64_t len, acc_t<S>* t) {
  using T = acc_t<S>;
  if constexpr (L == ZlprLabels::kSoft) {
    TORCHXC_PRAGMA(omp simd)
    for (int64_t i = 0; i < len; ++i) t[i] = load_acc(lab.soft[j + i]);
  } else if constexpr (L == ZlprLabels::kHard) {
    TORCHXC_PRAGMA(omp simd)
    for (int64_t i = 0; i < len; ++i) t[i] = static_cast<T>(lab.hard[j + i] != 0);
  } else {  // j is a multiple of 32
    for (int64_t w = 0; w * 32 < len; ++w) {
      const uint32_t word = lab.bits[(j >> 5) + w];
      TORCHXC_PRAGMA(omp simd)
      for (int b = 0; b < 32; ++b) t[w * 32 + b] = static_cast<T>((word >> b) & 1u);
    }
  }
}

// The block's scores in the accumulation type: 16-bit scores are first widened into a local float array (one
// vectorized conversion loop), so that the passes below, like the labels, only see float lanes.
template <typename S>
TORCHXC_ALWAYS_INLINE const acc_t<S>* load_scores(const S* x, int64_t j, int64_t len, acc_t<S>* buf) {
  if constexpr (std::is_same_v<S, acc_t<S>>) {
    return x + j;
  } else {
    TORCHXC_PRAGMA(omp simd)
    for (int64_t i = 0; i < len; ++i) buf[i] = load_acc(x[j + i]);
    return buf;
  }
}

template <typename T>
struct ZlprMax {
  T m_neg, m_pos;
  int nan;
  int64_t bad;  // soft labels outside [0, 1]
};

template <typename T>
struct ZlprSum {
  T s_neg, s_pos;
};

// Pass 1: maxima over each sum (at least 0: the "1 +" term), NaN scores, soft labels outside [0, 1].
template <typename S, ZlprLabels L, bool kMask>
TORCHXC_CPU_MULTIVERSION ZlprMax<acc_t<S>> zlpr_max(const S* x, LabelPtr<S> lab, const bool* mask, int64_t n) {
  using T = acc_t<S>;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  T mneg = 0, mpos = 0;
  int nan = 0;
  int64_t bad = 0;
  alignas(64) T t[kBlock];
  alignas(64) T xb[kBlock];
  for (int64_t j = 0; j < n; j += kBlock) {
    const int64_t len = std::min(kBlock, n - j);
    load_labels<L>(lab, j, len, t);
    const T* xs = load_scores(x, j, len, xb);
    TORCHXC_PRAGMA(omp simd reduction(max : mneg, mpos) reduction(| : nan) reduction(+ : bad))
    for (int64_t i = 0; i < len; ++i) {
      const T s = xs[i];
      const bool valid = (kMask ? mask_on(mask, j + i) : true) & (s != neg_inf);
      bad += !((t[i] >= T(0)) & (t[i] <= T(1)));
      const T a = bsel(valid & (t[i] < T(1)), s, neg_inf), b = bsel(valid & (t[i] > T(0)), -s, neg_inf);
      mneg = mneg > a ? mneg : a;
      mpos = mpos > b ? mpos : b;
      nan |= valid & (s != s);
    }
  }
  return {mneg, mpos, nan, bad};
}

// Pass 2: sum_i (1 - t_i) e^{s_i - m_neg} and sum_i t_i e^{-s_i - m_pos}. Excluded terms select 0 rather than
// being multiplied by a zero weight: never 0 * inf. Hard labels need one exponential per class.
// kStore: also store the terms for zlpr_scale: hard labels one value per class in e1, the term of the class's sum
// with the sign of its gradient (-e for positives; +0 for excluded classes); soft labels the negative-sum term in
// e1 and the positive-sum term in e2.
template <typename S, ZlprLabels L, bool kMask, bool kStore>
TORCHXC_CPU_MULTIVERSION ZlprSum<acc_t<S>> zlpr_sum(const S* x, LabelPtr<S> lab, const bool* mask, int64_t n,
                                                    acc_t<S> mneg, acc_t<S> mpos, acc_t<S>* e1, acc_t<S>* e2) {
  using T = acc_t<S>;
  const T neg_inf = -std::numeric_limits<T>::infinity();
  T sneg = 0, spos = 0;
  alignas(64) T t[kBlock];
  alignas(64) T xb[kBlock];
  for (int64_t j = 0; j < n; j += kBlock) {
    const int64_t len = std::min(kBlock, n - j);
    load_labels<L>(lab, j, len, t);
    const T* xs = load_scores(x, j, len, xb);
    TORCHXC_PRAGMA(omp simd reduction(+ : sneg, spos))
    for (int64_t i = 0; i < len; ++i) {
      const T s = xs[i];
      const bool valid = (kMask ? mask_on(mask, j + i) : true) & (s != neg_inf);
      if constexpr (L == ZlprLabels::kSoft) {
        const T a = bsel(valid & (t[i] < T(1)), (T(1) - t[i]) * vexp(s - mneg), T(0));
        const T b = bsel(valid & (t[i] > T(0)), t[i] * vexp(-s - mpos), T(0));
        sneg += a;
        spos += b;
        if constexpr (kStore) {
          e1[j + i] = a;
          e2[j + i] = b;
        }
      } else {
        const bool pos = t[i] > T(0);
        const T e = vexp(bsel(pos, -s - mpos, s - mneg));  // each class is in exactly one sum
        sneg += bsel(valid & !pos, e, T(0));
        spos += bsel(valid & pos, e, T(0));
        if constexpr (kStore) e1[j + i] = bsel(valid, bsel(pos, -e, e), T(0));
      }
    }
  }
  return {sneg, spos};
}

// Pass 3: the gradient (1 - t_i) e^{s_i} / Z_neg - t_i e^{-s_i} / Z_pos, with inv_zneg = e^{-m_neg} / Z_neg etc.,
// from the terms zlpr_sum stored (e1 may be the gradient itself: each entry is read before it is written).
template <typename S, ZlprLabels L>
TORCHXC_CPU_MULTIVERSION void zlpr_scale(const acc_t<S>* e1, const acc_t<S>* e2, S* grad, int64_t n,
                                         acc_t<S> inv_zneg, acc_t<S> inv_zpos) {
  using T = acc_t<S>;
  TORCHXC_PRAGMA(omp simd)
  for (int64_t i = 0; i < n; ++i) {
    T g;
    if constexpr (L == ZlprLabels::kSoft) {
      g = e1[i] * inv_zneg - e2[i] * inv_zpos;
    } else {  // -e * inv_zpos for positives (-0 when e is 0: sign bit set, not < 0, and -0 * inv_zneg = -0)
      g = e1[i] * bsel(e1[i] < T(0), inv_zpos, inv_zneg);
    }
    grad[i] = store_acc<S>(g);
  }
}

// log(e^{-m} + s) + m = log(1 + sum), accurate when the sum is tiny (a fitted model).
inline double zlpr_term(double m, double s) {
  return m == 0.0 ? std::log1p(s) : m + std::log(std::exp(-m) + s);
}

template <typename S, ZlprLabels L, bool kMask>
struct ZlprRow {
  using T = acc_t<S>;
  const char* op;
  double grad_scale;  // multiplies the stored gradient (folded into the row's normalisers)

  // Values zlpr_sum stores per class for the gradient pass: e1 (in the gradient itself when S is T), and e2 for
  // soft labels.
  static constexpr bool kInPlace = std::is_same_v<S, T>;
  static int64_t work_size(int64_t d) { return (kInPlace ? 0 : d) + (L == ZlprLabels::kSoft ? d : 0); }

  // One chunk of a row: its maxima (at least 0), NaN and bad-label flags, and its sums relative to its own maxima
  // (storing the terms in e1 / e2 when they are given). The chunk is read twice while it is in cache.
  struct Chunk {
    ZlprMax<T> mx;
    T s_neg, s_pos;
  };
  static Chunk run_chunk(const S* x, LabelPtr<S> lab, const bool* mask, int64_t c0, int64_t n, T* e1, T* e2) {
    const ZlprMax<T> mx = run_max(x, lab, mask, c0, n);
    if (mx.nan || mx.bad) return {mx, T(0), T(0)};  // the row is NaN or an error: no sums needed
    const ZlprSum<T> sm = run_sum(x, lab, mask, c0, n, mx, e1, e2);
    return {mx, sm.s_neg, sm.s_pos};
  }

  // Loss of one row; writes its gradient when grad != nullptr, with `work` holding work_size(d) values. The row
  // is processed in chunks of kChunk classes (a log-sum-exp per chunk, merged in chunk order: one pass over memory
  // for the loss, and the same result whether the chunks run on one thread or, when `split`, on several).
  double operator()(const S* x, LabelPtr<S> lab, const bool* mask, S* grad, T* work, int64_t d, bool split,
                    int64_t row) const {
    T* e1 = nullptr;
    T* e2 = nullptr;  // soft labels only
    if (grad) {
      e1 = kInPlace ? reinterpret_cast<T*>(grad) : work;
      if constexpr (L == ZlprLabels::kSoft) e2 = kInPlace ? work : work + d;
    }
    const int64_t nchunks = num_chunks(d);
    Chunk one;
    std::vector<Chunk> many(nchunks > 1 ? nchunks : 0);
    Chunk* part = nchunks > 1 ? many.data() : &one;
    // chunks [b, e) of the row by f(b, e): on this thread, or across threads when `split`
    const auto over_chunks = [&](const auto& f) {
      if (split) {
        at::parallel_for(0, nchunks, 1, f);
      } else {
        f(0, nchunks);
      }
    };
    over_chunks([&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) part[c] = run_chunk(x, lab, mask, c * kChunk, chunk_len(d, c), e1, e2);
    });
    T m_neg = 0, m_pos = 0;
    int nan = 0;
    int64_t bad = 0;
    for (int64_t c = 0; c < nchunks; ++c) {
      m_neg = std::max(m_neg, part[c].mx.m_neg);
      m_pos = std::max(m_pos, part[c].mx.m_pos);
      nan |= part[c].mx.nan;
      bad += part[c].mx.bad;
    }
    if (bad != 0) {  // only soft (float) labels can be outside; integer labels arrive as floats
      int64_t j = 0;
      while (j < d && load_acc(lab.soft[j]) >= T(0) && load_acc(lab.soft[j]) <= T(1)) ++j;
      TORCH_CHECK(false, op, ": labels must lie in [0, 1], but row ", row, " has ", bad, " outside, the first ",
                  shortest_repr(j < d ? load_acc(lab.soft[j]) : T(0)), " (class ", j, ")");
    }
    if (nan) {
      if (grad) std::fill(grad, grad + d, store_acc<S>(std::numeric_limits<T>::quiet_NaN()));
      return std::numeric_limits<double>::quiet_NaN();
    }
    // the chunks' sums relative to the row's maxima, in chunk order (factors e^(m_c - m) <= 1: no overflow)
    double sneg = 0, spos = 0;
    for (int64_t c = 0; c < nchunks; ++c) {
      sneg += static_cast<double>(part[c].s_neg) * chunk_factor(part[c].mx.m_neg, m_neg);
      spos += static_cast<double>(part[c].s_pos) * chunk_factor(part[c].mx.m_pos, m_pos);
    }
    if (grad) {
      const double zneg = std::exp(-static_cast<double>(m_neg)) + sneg;
      const double zpos = std::exp(-static_cast<double>(m_pos)) + spos;
      over_chunks([&](int64_t b, int64_t e) {
        for (int64_t c = b; c < e; ++c) {
          const T inv_zneg = static_cast<T>(grad_scale * chunk_factor(part[c].mx.m_neg, m_neg) / zneg);
          const T inv_zpos = static_cast<T>(grad_scale * chunk_factor(part[c].mx.m_pos, m_pos) / zpos);
          const int64_t c0 = c * kChunk;
          zlpr_scale<S, L>(e1 + c0, e2 ? e2 + c0 : nullptr, grad + c0, chunk_len(d, c), inv_zneg, inv_zpos);
        }
      });
    }
    return zlpr_term(m_neg, sneg) + zlpr_term(m_pos, spos);
  }

  // e^(m_c - m) for a chunk maximum m_c <= m; exactly 1 when they are equal (a row of one chunk is unchanged)
  static double chunk_factor(T m_c, T m) {
    return m_c == m ? 1.0 : std::exp(static_cast<double>(m_c) - static_cast<double>(m));
  }

  static ZlprMax<T> run_max(const S* x, LabelPtr<S> lab, const bool* mask, int64_t c0, int64_t n) {
    return zlpr_max<S, L, kMask>(x + c0, lab.offset(c0), mask ? mask + c0 : nullptr, n);
  }
  static ZlprSum<T> run_sum(const S* x, LabelPtr<S> lab, const bool* mask, int64_t c0, int64_t n,
                            const ZlprMax<T>& mx, T* e1, T* e2) {
    const bool* mk = mask ? mask + c0 : nullptr;
    if (e1) return zlpr_sum<S, L, kMask, true>(x + c0, lab.offset(c0), mk, n, mx.m_neg, mx.m_pos, e1 + c0,
                                               e2 ? e2 + c0 : nullptr);
    return zlpr_sum<S, L, kMask, false>(x + c0, lab.offset(c0), mk, n, mx.m_neg, mx.m_pos, nullptr, nullptr);
  }
};

template <typename S, ZlprLabels L>
void zlpr_cpu_kernel(const ZlprProblem& P, const char* op) {
  const int64_t rows = P.rows, d = P.d;
  const S* x = P.x.const_data_ptr<S>();
  S* loss = P.loss.mutable_data_ptr<S>();
  S* grad = P.grad.numel() > 0 ? P.grad.mutable_data_ptr<S>() : nullptr;
  const bool* mask = P.mask.defined() ? P.mask.const_data_ptr<bool>() : nullptr;
  const int64_t mask_stride = P.mask_per_row ? d : 0;
  const int64_t words = (d + 31) / 32;
  std::vector<uint32_t> bits_long;  // the long-row path's bitmask (rows run one after the other)
  if (L == ZlprLabels::kBits && use_long_row_path(rows, d)) bits_long.resize(words);
  auto body = [&](auto row_fn, int64_t r, bool split, uint32_t* bits, acc_t<S>* work) {
    LabelPtr<S> lab;
    if constexpr (L == ZlprLabels::kHard) {
      lab.hard = reinterpret_cast<const uint8_t*>(P.labels.const_data_ptr<bool>()) + r * d;
    } else if constexpr (L == ZlprLabels::kSoft) {
      lab.soft = P.labels.const_data_ptr<S>() + r * d;
    } else {
      const int64_t np = P.labels.size(-1);
      const int64_t* pos = P.labels.const_data_ptr<int64_t>() + r * np;
      std::fill(bits, bits + words, 0u);
      for (int64_t k = 0; k < np; ++k) {  // duplicates set the same bit: counted once
        const int64_t j = pos[k];
        TORCH_CHECK(j >= -1 && j < d, op, ": positive class index ", j, " is out of range for ", d,
                    " classes (-1 pads the list)");
        if (j >= 0) bits[j >> 5] |= 1u << (j & 31);
      }
      lab.bits = bits;
    }
    const bool* mk = mask ? mask + r * mask_stride : nullptr;
    loss[r] = store_acc<S>(static_cast<acc_t<S>>(
        row_fn(x + r * d, lab, mk, grad ? grad + r * d : nullptr, work, d, split, r)));
  };
  auto run = [&](auto row_fn) {
    const int64_t work = grad ? decltype(row_fn)::work_size(d) : 0;
    if (use_long_row_path(rows, d)) {
      auto w = scratch<acc_t<S>>(work);
      for (int64_t r = 0; r < rows; ++r) body(row_fn, r, true, bits_long.data(), w.get());
      return;
    }
    at::parallel_for(0, rows, row_grain(d), [&](int64_t b, int64_t e) {
      std::vector<uint32_t> bits(L == ZlprLabels::kBits ? words : 0);
      auto w = scratch<acc_t<S>>(work);
      for (int64_t r = b; r < e; ++r) body(row_fn, r, false, bits.data(), w.get());
    });
  };
  if (mask) {
    run(ZlprRow<S, L, true>{op, P.grad_scale});
  } else {
    run(ZlprRow<S, L, false>{op, P.grad_scale});
  }
}

std::tuple<at::Tensor, at::Tensor> zlpr_loss_cpu(const at::Tensor& input, const at::Tensor& target,
                                                 const c10::optional<at::Tensor>& mask, bool compute_grad,
                                                 double grad_scale) {
  constexpr const char* op = "torchxc::zlpr_loss";
  ZlprProblem P = ZlprProblem::make(input, target, mask, compute_grad, grad_scale, /*sparse=*/false, op);
  if (P.rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "zlpr_loss_cpu", [&] {
      if (target.scalar_type() == at::kBool) {
        zlpr_cpu_kernel<scalar_t, ZlprLabels::kHard>(P, op);
      } else {
        zlpr_cpu_kernel<scalar_t, ZlprLabels::kSoft>(P, op);
      }
    });
  }
  return {P.loss, P.grad};
}

std::tuple<at::Tensor, at::Tensor> zlpr_loss_sparse_cpu(const at::Tensor& input, const at::Tensor& positives,
                                                        const c10::optional<at::Tensor>& mask, bool compute_grad,
                                                        double grad_scale) {
  constexpr const char* op = "torchxc::zlpr_loss_sparse";
  ZlprProblem P = ZlprProblem::make(input, positives, mask, compute_grad, grad_scale, /*sparse=*/true, op);
  if (P.rows > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "zlpr_loss_sparse_cpu", [&] {
      zlpr_cpu_kernel<scalar_t, ZlprLabels::kBits>(P, op);
    });
  }
  return {P.loss, P.grad};
}

// On the CPU the backward calls this only after its value test found a row to scale, so every row is multiplied (by
// exactly 1 where the incoming gradient equals grad_scale, which leaves those rows bit-identical): one vectorized,
// parallel ATen multiply by per-row factors in the gradient's dtype (a float16 / bfloat16 factor is rounded once from
// the float32 quotient; a mixed-dtype multiply took 35x as long).
void zlpr_scale_grad_cpu(const at::Tensor& grad, const at::Tensor& grad_loss, double grad_scale) {
  const ZlprScaleProblem P = ZlprScaleProblem::make(grad, grad_loss, grad_scale);
  if (P.rows == 0 || P.d == 0) return;
  const auto acc = grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor factor = (P.go.to(acc) / grad_scale).to(grad.scalar_type());
  grad.view({P.rows, P.d}).mul_(factor.unsqueeze(-1));
}

}  // namespace

TORCH_LIBRARY_IMPL(torchxc, CPU, m) {
  m.impl("zlpr_loss", &zlpr_loss_cpu);
  m.impl("zlpr_loss_sparse", &zlpr_loss_sparse_cpu);
  m.impl("_zlpr_scale_grad_", &zlpr_scale_grad_cpu);
}

}  // namespace torchxc
