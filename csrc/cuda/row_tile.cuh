// Device building blocks for row-wise kernels (reused by every row-normalising op in torchxc).
//
// A row of d values is processed by TPR threads ("threads per row"): TPR <= 32 is a (sub-)warp and reduces
// with shuffles; TPR == blockDim.x > 32 is a whole block and reduces through shared memory. Each thread
// holds ITEMS values in registers, read with VEC-wide vector loads: for item i of lane l the column is
//   (i / VEC) * TPR * VEC + l * VEC + i % VEC,
// so consecutive lanes read consecutive VEC-vectors (coalesced). Columns >= d read as `fill`.
#pragma once

#include <c10/macros/Macros.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace torchxc {
namespace cuda {

constexpr int kWarp = 32;

template <typename T, int N>
struct alignas(sizeof(T) * N) AlignedVec {
  T v[N];
};

// Lanes of the calling thread's row group within its warp (all 32 for TPR >= 32).
template <int TPR>
__device__ __forceinline__ unsigned row_lane_mask() {
  if constexpr (TPR >= kWarp) {
    return 0xffffffffu;
  } else {
    return ((1u << TPR) - 1u) << ((threadIdx.x % kWarp) / TPR * TPR);
  }
}

struct MaxNaN {  // maximum that propagates NaN
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return (a != a || a > b) ? a : b;
  }
};

struct Sum {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};

// Second level of a block reduction: every warp combines the NW per-warp partials smem[0..NW) itself, lane l
// reading smem[l % NW], with a butterfly over groups of NW lanes. All threads get the same bits (the same
// commutative operations in the same tree), in log2(NW) shuffles instead of NW - 1 dependent shared-memory loads.
template <int NW, typename T, typename Op>
__device__ __forceinline__ T combine_warp_partials(const T* smem, Op op) {
  static_assert(NW >= 1 && NW <= kWarp && (NW & (NW - 1)) == 0, "NW: a power of two up to 32");
  T v = smem[threadIdx.x % NW];
#pragma unroll
  for (int o = NW / 2; o > 0; o /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// All-reduce over the TPR threads of a row. Every thread gets a bitwise identical result (butterfly of
// commutative operations, or one shared-memory sweep in a fixed order), so control flow that depends on the
// result stays uniform across the row. `smem` needs blockDim.x / 32 slots (unused when TPR <= 32).
template <int TPR, typename T, typename Op>
__device__ __forceinline__ T row_allreduce(T v, Op op, T* smem) {
  constexpr int W = TPR < kWarp ? TPR : kWarp;
  const unsigned mask = row_lane_mask<TPR>();
#pragma unroll
  for (int o = W / 2; o > 0; o /= 2) {
    v = op(v, __shfl_xor_sync(mask, v, o));
  }
  if constexpr (TPR > kWarp) {
    const int warp = threadIdx.x / kWarp;
    if (threadIdx.x % kWarp == 0) smem[warp] = v;
    __syncthreads();
    v = combine_warp_partials<TPR / kWarp>(smem, op);
    __syncthreads();  // smem is reused by the next reduction
  }
  return v;
}

template <int TPR, int ITEMS, int VEC>
__device__ __forceinline__ int64_t tile_col(int i, int lane) {
  return static_cast<int64_t>(i / VEC) * TPR * VEC + static_cast<int64_t>(lane) * VEC + i % VEC;
}

// Loads a row into registers as acc_t. With VEC > 1 the caller guarantees that d % VEC == 0 and that the
// row start is aligned to VEC elements.
template <int TPR, int ITEMS, int VEC, typename acc_t, typename scalar_t>
__device__ __forceinline__ void tile_load(acc_t (&v)[ITEMS], const scalar_t* __restrict__ row, int64_t d, int lane,
                                          bool valid, acc_t fill) {
#pragma unroll
  for (int i = 0; i < ITEMS; i += VEC) {
    const int64_t col = tile_col<TPR, ITEMS, VEC>(i, lane);
    if (valid && col < d) {
      if constexpr (VEC > 1) {
        const auto pack = *reinterpret_cast<const AlignedVec<scalar_t, VEC>*>(row + col);
#pragma unroll
        for (int e = 0; e < VEC; ++e) v[i + e] = static_cast<acc_t>(pack.v[e]);
      } else {
        v[i] = static_cast<acc_t>(row[col]);
      }
    } else {
#pragma unroll
      for (int e = 0; e < VEC; ++e) v[i + e] = fill;
    }
  }
}

// Loads a row of bools (same layout as tile_load) straight into a bit mask: bit i is item i (0 past d).
template <int TPR, int ITEMS, int VEC>
__device__ __forceinline__ uint32_t tile_load_bits(const bool* __restrict__ row, int64_t d, int lane, bool valid) {
  static_assert(ITEMS <= 32, "bit masks are 32-bit");
  uint32_t bits = 0;
#pragma unroll
  for (int i = 0; i < ITEMS; i += VEC) {
    const int64_t col = tile_col<TPR, ITEMS, VEC>(i, lane);
    if (valid && col < d) {
      // read as bytes and tested != 0, as the CPU does: a bool tensor viewed from uint8 may hold bytes other than 0/1
      const uint8_t* bytes = reinterpret_cast<const uint8_t*>(row + col);
      if constexpr (VEC > 1) {
        const auto pack = *reinterpret_cast<const AlignedVec<uint8_t, VEC>*>(bytes);
#pragma unroll
        for (int e = 0; e < VEC; ++e) bits |= uint32_t(pack.v[e] != 0) << (i + e);
      } else {
        bits |= uint32_t(bytes[0] != 0) << i;
      }
    }
  }
  return bits;
}

template <int TPR, int ITEMS, int VEC, typename acc_t, typename scalar_t>
__device__ __forceinline__ void tile_store(const acc_t (&v)[ITEMS], scalar_t* __restrict__ row, int64_t d, int lane,
                                           bool valid) {
  if (!valid) return;
#pragma unroll
  for (int i = 0; i < ITEMS; i += VEC) {
    const int64_t col = tile_col<TPR, ITEMS, VEC>(i, lane);
    if (col < d) {
      if constexpr (VEC > 1) {
        AlignedVec<scalar_t, VEC> pack;
#pragma unroll
        for (int e = 0; e < VEC; ++e) pack.v[e] = static_cast<scalar_t>(v[i + e]);
        *reinterpret_cast<AlignedVec<scalar_t, VEC>*>(row + col) = pack;
      } else {
        row[col] = static_cast<scalar_t>(v[i]);
      }
    }
  }
}

// Exclusive prefix sum over a block (blockDim.x == BLOCK, a multiple of 32); returns this thread's offset and
// the block total through `total`. `smem` needs BLOCK / 32 slots.
template <int BLOCK>
__device__ __forceinline__ int block_exclusive_scan(int v, int* smem, int* total) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  int incl = v;
#pragma unroll
  for (int o = 1; o < kWarp; o *= 2) {
    const int n = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += n;
  }
  if (lane == kWarp - 1) smem[warp] = incl;
  __syncthreads();
  int warp_offset = 0, sum = 0;
#pragma unroll
  for (int w = 0; w < BLOCK / kWarp; ++w) {
    warp_offset += w < warp ? smem[w] : 0;
    sum += smem[w];
  }
  __syncthreads();
  *total = sum;
  return warp_offset + incl - v;
}

}  // namespace cuda
}  // namespace torchxc
