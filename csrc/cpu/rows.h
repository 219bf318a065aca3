// How the CPU kernels split row-wise work across threads.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <memory>

namespace torchxc {

// Elements per parallel task; the row length from which a row is split across threads when there are fewer
// rows than threads; the chunk such a row is split into (a multiple of 32, for bitmask labels).
constexpr int64_t kGrainElems = 1 << 15;
constexpr int64_t kLongRow = 1 << 16;
constexpr int64_t kChunk = 1 << 14;

inline bool use_long_row_path(int64_t rows, int64_t d) {
  return d >= kLongRow && rows < at::get_num_threads();
}

inline int64_t row_grain(int64_t d) {
  return std::max<int64_t>(1, kGrainElems / std::max<int64_t>(d, 1));
}

inline int64_t num_chunks(int64_t d) {
  return (d + kChunk - 1) / kChunk;
}

inline int64_t chunk_len(int64_t d, int64_t c) {
  return std::min(kChunk, d - c * kChunk);
}

// Uninitialised per-task buffer.
template <typename T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

}  // namespace torchxc
