// CPU kernel of TreeSampler.fit's inner solver (python/torchxc/sampling.py, _NodeLogistic): Newton steps of one
// L2-regularised logistic regression per node of a tree level, over examples sorted by node.
//
// Example e (row e of z, [E, k]) belongs to the node n with offsets[n] <= e < offsets[n + 1]; node n's parameters
// theta_n = (w_n [k], b_n) (bias last). With x_e = (z_e, 1), a step computes for every node p_e = sigmoid(x_e .
// theta_n),
//   g_n = reg * theta_n + sum_e (p_e - target_e) x_e,   H_n = diag(reg) + sum_e p_e (1 - p_e) x_e x_e^T,
// solves H_n s = g_n (Cholesky, float64) and moves theta_n -= s * max_step / max(|s|, max_step) (a trust-region
// step). The ATen version of the same step (sparse CSR products, batched LU in float32) runs on other devices and
// is what the tests compare with.
//
// One pass over the examples per step, no [E, k, k] or CSR intermediates: the examples are cut into fixed chunks
// (independent of the thread count, so results are too); a node that lies inside one chunk is accumulated and
// solved by that chunk's thread; the few nodes that cross a chunk boundary leave partial sums in per-chunk slots,
// added up in chunk order afterwards. Sums are float64.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "simd.h"

namespace torchxc {
namespace {

constexpr const char* kOp = "torchxc::tree_fit_newton";

#if defined(__GNUC__) && !defined(__clang__)
#define TORCHXC_SCALAR_LOOPS __attribute__((optimize("no-tree-vectorize")))
#else
#define TORCHXC_SCALAR_LOOPS
#endif

// A node's sums, in doubles, kp = k rounded up to a multiple of 8 (whole vectors; padding columns stay 0):
// [sum r z (kp) | sum w z (kp) | sum r, sum w, 6 unused | sum w z z^T (k rows of kp)], r = p - target, w = p (1 - p).
// Row a of the last block holds columns from a rounded down to 8 (the upper triangle by whole vectors).
struct Layout {
  int64_t k, kp;
  int64_t gz() const { return 0; }
  int64_t hzb() const { return kp; }
  int64_t scalars() const { return 2 * kp; }
  int64_t hzz() const { return 2 * kp + 8; }
  int64_t size() const { return 2 * kp + 8 + k * kp; }
};

// Examples go G at a time, so that each load and store of a row of sums serves G of them. zd: G rows of kp
// doubles whose padding columns are 0.
template <int G>
TORCHXC_ALWAYS_INLINE void accumulate_group(const float* z, const float* target, int64_t i, const float* theta,
                                            Layout l, double* acc, double* zd) {
  const int64_t k = l.k, kp = l.kp;
  double w[G], r[G];
  for (int j = 0; j < G; ++j) {
    const float* zi = z + (i + j) * k;
    double* d = zd + j * kp;
    double m = static_cast<double>(theta[k]);
    TORCHXC_PRAGMA(omp simd reduction(+ : m))
    for (int64_t a = 0; a < k; ++a) {
      d[a] = static_cast<double>(zi[a]);
      m += d[a] * static_cast<double>(theta[a]);
    }
    const double p = 1.0 / (1.0 + std::exp(-m));
    r[j] = p - static_cast<double>(target[i + j]);
    w[j] = p * (1.0 - p);
  }
  double* gz = acc + l.gz();
  double* hzb = acc + l.hzb();
  TORCHXC_PRAGMA(omp simd)
  for (int64_t a = 0; a < kp; ++a) {
    double u = gz[a], v = hzb[a];
    for (int j = 0; j < G; ++j) {
      u += r[j] * zd[j * kp + a];
      v += w[j] * zd[j * kp + a];
    }
    gz[a] = u;
    hzb[a] = v;
  }
  for (int j = 0; j < G; ++j) {
    acc[l.scalars()] += r[j];
    acc[l.scalars() + 1] += w[j];
  }
  double* h = acc + l.hzz();
  for (int64_t a = 0; a < k; ++a) {
    double wa[G];
    for (int j = 0; j < G; ++j) wa[j] = w[j] * zd[j * kp + a];
    double* ha = h + a * kp;
    TORCHXC_PRAGMA(omp simd)
    for (int64_t c = a & ~int64_t(7); c < kp; ++c) {
      double v = ha[c];
      for (int j = 0; j < G; ++j) v += wa[j] * zd[j * kp + c];
      ha[c] = v;
    }
  }
}

// acc += the examples [b, e) of one node under theta. zd: 4 * kp doubles, its padding columns 0.
TORCHXC_CPU_MULTIVERSION
void accumulate(const float* z, const float* target, int64_t b, int64_t e, const float* theta, Layout l,
                double* acc, double* zd) {
  int64_t i = b;
  for (; i + 4 <= e; i += 4) accumulate_group<4>(z, target, i, theta, l, acc, zd);
  for (; i < e; ++i) accumulate_group<1>(z, target, i, theta, l, acc, zd);
}

// theta_out = theta - s * max_step / max(|s|, max_step), H s = g, from the node's sums acc (all zero for a node
// without examples). work: (k + 1) * (k + 3) doubles. H = U^T U with U upper triangular, row-major (every inner
// loop runs along a contiguous row). Scalar code: at 17 x 17 the vectorized loops' set-up costs more than they save
// (1.2x slower per node, measured).
TORCHXC_SCALAR_LOOPS
void newton_update(const double* acc, const float* theta, const float* reg, Layout l, double max_step,
                   float* theta_out, double* work) {
  const int64_t k = l.k, n = k + 1, kp = l.kp;
  double* U = work;  // H's upper triangle, then its factor, [n, n]; index k is the bias
  double* s = work + n * n;
  double* inv = s + n;  // 1 / U[a][a]
  for (int64_t a = 0; a < k; ++a) {
    const double* ha = acc + l.hzz() + a * kp;
    for (int64_t c = a; c < k; ++c) U[a * n + c] = ha[c];
    U[a * n + k] = acc[l.hzb() + a];
    s[a] = acc[l.gz() + a];
  }
  U[k * n + k] = acc[l.scalars() + 1];
  s[k] = acc[l.scalars()];
  for (int64_t a = 0; a < n; ++a) {
    U[a * n + a] += static_cast<double>(reg[a]);
    s[a] += static_cast<double>(reg[a]) * static_cast<double>(theta[a]);
  }
  for (int64_t a = 0; a < n; ++a) {
    double* Ua = U + a * n;
    // H >= diag(reg) > 0, so the pivot is > 0 up to rounding; keep the factor finite if rounding says otherwise
    const double d = std::sqrt(std::max(Ua[a], 1e-300));
    inv[a] = 1.0 / d;
    Ua[a] = d;
    for (int64_t c = a + 1; c < n; ++c) Ua[c] *= inv[a];
    for (int64_t r = a + 1; r < n; ++r) {
      const double f = Ua[r];
      double* Ur = U + r * n;
      for (int64_t c = r; c < n; ++c) Ur[c] -= f * Ua[c];
    }
  }
  for (int64_t a = 0; a < n; ++a) {  // U^T y = g, column by column
    const double* Ua = U + a * n;
    s[a] *= inv[a];
    const double y = s[a];
    for (int64_t c = a + 1; c < n; ++c) s[c] -= Ua[c] * y;
  }
  for (int64_t a = n - 1; a >= 0; --a) {  // U s = y
    const double* Ua = U + a * n;
    double v = s[a];
    for (int64_t c = a + 1; c < n; ++c) v -= Ua[c] * s[c];
    s[a] = v * inv[a];
  }
  double norm = 0.0;
  for (int64_t a = 0; a < n; ++a) norm += s[a] * s[a];
  const double scale = max_step / std::max(std::sqrt(norm), max_step);
  for (int64_t a = 0; a < n; ++a) {
    theta_out[a] = static_cast<float>(static_cast<double>(theta[a]) - s[a] * scale);
  }
}

TORCHXC_CPU_MULTIVERSION
void margins_of(const float* z, int64_t b, int64_t e, const float* theta, int64_t k, float* out) {
  for (int64_t i = b; i < e; ++i) {
    const float* zi = z + i * k;
    double m = static_cast<double>(theta[k]);
    TORCHXC_PRAGMA(omp simd reduction(+ : m))
    for (int64_t a = 0; a < k; ++a) m += static_cast<double>(zi[a]) * static_cast<double>(theta[a]);
    out[i] = static_cast<float>(m);
  }
}

// f(node, begin, end) for each node's share [begin, end) of the examples [b, e), in order (nodes without examples
// skipped); offsets non-decreasing, offsets[0] = 0 <= b < e <= offsets[n].
template <typename F>
void for_each_node_segment(const int64_t* offsets, int64_t n, int64_t b, int64_t e, const F& f) {
  int64_t node = static_cast<int64_t>(std::upper_bound(offsets, offsets + n + 1, b) - offsets) - 1;
  for (int64_t pos = b; pos < e; ++node) {
    const int64_t end = std::min(offsets[node + 1], e);
    if (end > pos) f(node, pos, end);
    pos = std::max(pos, end);
  }
}

std::tuple<at::Tensor, at::Tensor> tree_fit_newton_cpu(const at::Tensor& z, const at::Tensor& offsets,
                                                        const at::Tensor& theta, const at::Tensor& target,
                                                        const at::Tensor& reg, int64_t steps, double max_step) {
  TORCH_CHECK(z.dim() == 2 && z.scalar_type() == at::kFloat, kOp, ": expected z float32 [E, k], got ",
              z.scalar_type(), " ", z.sizes());
  const int64_t E = z.size(0), k = z.size(1);
  TORCH_CHECK(theta.dim() == 2 && theta.scalar_type() == at::kFloat && theta.size(1) == k + 1, kOp,
              ": expected theta float32 [nodes, k + 1 = ", k + 1, "], got ", theta.scalar_type(), " ",
              theta.sizes());
  const int64_t n = theta.size(0);
  TORCH_CHECK(offsets.dim() == 1 && offsets.scalar_type() == at::kLong && offsets.size(0) == n + 1, kOp,
              ": expected offsets int64 [nodes + 1 = ", n + 1, "], got ", offsets.scalar_type(), " ",
              offsets.sizes());
  TORCH_CHECK(target.dim() == 1 && target.scalar_type() == at::kFloat && target.size(0) == E, kOp,
              ": expected target float32 [E = ", E, "], got ", target.scalar_type(), " ", target.sizes());
  TORCH_CHECK(reg.dim() == 1 && reg.scalar_type() == at::kFloat && reg.size(0) == k + 1, kOp,
              ": expected reg float32 [k + 1 = ", k + 1, "], got ", reg.scalar_type(), " ", reg.sizes());
  for (const at::Tensor* t : {&z, &offsets, &theta, &target, &reg}) {
    TORCH_CHECK(t->device().is_cpu(), kOp, ": expected every tensor on the CPU, got z on ", z.device(), ", offsets on ",
                offsets.device(), ", theta on ", theta.device(), ", target on ", target.device(), ", reg on ",
                reg.device());
  }
  TORCH_CHECK(steps >= 0, kOp, ": steps must be >= 0, got ", steps);
  TORCH_CHECK(max_step > 0 && std::isfinite(max_step), kOp, ": max_step must be positive and finite, got ",
              max_step);
  const at::Tensor zc = z.contiguous(), oc = offsets.contiguous(), tc = target.contiguous();
  const at::Tensor rc = reg.contiguous();
  const int64_t* off = oc.data_ptr<int64_t>();
  TORCH_CHECK(off[0] == 0 && off[n] == E, kOp, ": offsets must start at 0 and end at E = ", E, ", got ", off[0],
              " and ", off[n]);
  for (int64_t i = 0; i < n; ++i) {
    TORCH_CHECK(off[i] <= off[i + 1], kOp, ": offsets must not decrease, but offsets[", i, "] = ", off[i],
                " > offsets[", i + 1, "] = ", off[i + 1]);
  }
  const float* rp = rc.data_ptr<float>();
  for (int64_t a = 0; a <= k; ++a) {
    TORCH_CHECK(rp[a] > 0 && std::isfinite(rp[a]), kOp, ": reg must be positive and finite, got reg[", a, "] = ",
                rp[a]);
  }
  at::Tensor cur = theta.contiguous().clone();
  at::Tensor next = at::empty_like(cur);
  at::Tensor margins = at::empty({E}, z.options());
  const float* zp = zc.data_ptr<float>();
  const float* tp = tc.data_ptr<float>();
  const Layout l{k, (k + 7) / 8 * 8};
  const int64_t acc_size = l.size(), work_size = (k + 1) * (k + 3);
  // fixed chunks (never from the thread count): at least 4096 examples each, at most 256 of them, and at most as
  // many as keep the partial slots (two per chunk) within 64 MB at wide k (k = 512: 16 chunks)
  const int64_t max_chunks = std::clamp<int64_t>((int64_t(64) << 20) / (16 * acc_size), 16, 256);
  const int64_t chunk = std::max<int64_t>(4096, (E + max_chunks - 1) / max_chunks);
  const int64_t n_chunks = (E + chunk - 1) / chunk;
  std::vector<double> slots(static_cast<size_t>(2 * n_chunks * acc_size));
  std::vector<int64_t> slot_node(static_cast<size_t>(2 * n_chunks));
  for (int64_t step = 0; step < steps; ++step) {
    const float* th = cur.data_ptr<float>();
    float* out = next.data_ptr<float>();
    std::fill(slot_node.begin(), slot_node.end(), -1);
    at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
      std::vector<double> acc(static_cast<size_t>(acc_size)), work(static_cast<size_t>(work_size));
      std::vector<double> zd(static_cast<size_t>(4 * l.kp), 0.0);
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t b = c * chunk, e = std::min(E, b + chunk);
        for_each_node_segment(off, n, b, e, [&](int64_t node, int64_t nb, int64_t ne) {
          std::fill(acc.begin(), acc.end(), 0.0);
          accumulate(zp, tp, nb, ne, th + node * (k + 1), l, acc.data(), zd.data());
          if (off[node] >= b && off[node + 1] <= e) {
            newton_update(acc.data(), th + node * (k + 1), rp, l, max_step, out + node * (k + 1), work.data());
          } else {  // crosses the chunk's start (slot 2c; a node covering the whole chunk too) or its end (2c + 1)
            const int64_t s = 2 * c + (off[node] < b ? 0 : 1);
            slot_node[s] = node;
            std::copy(acc.begin(), acc.end(), slots.begin() + s * acc_size);
          }
        });
      }
    });
    // nodes crossing chunk boundaries: their slots in chunk order, then one update each
    std::vector<double> acc(static_cast<size_t>(acc_size)), work(static_cast<size_t>(work_size));
    for (int64_t s = 0; s < 2 * n_chunks;) {
      const int64_t node = slot_node[s];
      if (node < 0) {
        ++s;
        continue;
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (; s < 2 * n_chunks && (slot_node[s] == node || slot_node[s] < 0); ++s) {
        if (slot_node[s] < 0) continue;
        for (int64_t a = 0; a < acc_size; ++a) acc[a] += slots[s * acc_size + a];
      }
      newton_update(acc.data(), th + node * (k + 1), rp, l, max_step, out + node * (k + 1), work.data());
    }
    // nodes without examples: only the penalty acts (theta shrinks toward 0)
    at::parallel_for(0, n, 1024, [&](int64_t n0, int64_t n1) {
      std::vector<double> zero(static_cast<size_t>(acc_size), 0.0), work(static_cast<size_t>(work_size));
      for (int64_t i = n0; i < n1; ++i) {
        if (off[i] == off[i + 1]) {
          newton_update(zero.data(), th + i * (k + 1), rp, l, max_step, out + i * (k + 1), work.data());
        }
      }
    });
    std::swap(cur, next);
  }
  const float* th = cur.data_ptr<float>();
  float* mp = margins.data_ptr<float>();
  at::parallel_for(0, n_chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t b = c * chunk, e = std::min(E, b + chunk);
      for_each_node_segment(off, n, b, e, [&](int64_t node, int64_t nb, int64_t ne) {
        margins_of(zp, nb, ne, th + node * (k + 1), k, mp);
      });
    }
  });
  return {cur, margins};
}

}  // namespace

TORCH_LIBRARY_IMPL(torchxc, CPU, m) { m.impl("tree_fit_newton", &tree_fit_newton_cpu); }

}  // namespace torchxc
