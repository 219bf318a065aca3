// Cooperative chunks: rows cut into chunks of kCoopChunk values, one 256-thread block each, whose values stay in
// registers from the load to the store, and whose blocks meet through global memory (ZLPR: zlpr_cuda.cu; sparsemax:
// sparsemax_cuda.cu).
//
// Why: a row of 32768 values in the registers of one 1024-thread block is alone on its SM (64K registers), so its
// loads, barriers and arithmetic take turns; the split path reads the row twice. Chunk blocks are small (several per
// SM, one's loads overlapping another's arithmetic) and read and write each value once.
// How: block b holds chunk b % nchunks of row b / nchunks. It publishes what its chunk contributes, counts itself in
// a row counter, and waits until the counter shows every chunk of the row; then each block reduces the published
// values itself, in a fixed order (the same bits in every block, whichever arrived last). A block only waits for
// blocks of its own row, and the host takes this path only when a row's chunks fit in at most half of the blocks the
// device keeps resident at once (coop_fits): blocks are dispatched in index order, as CUB's single-pass scan also
// assumes, so the rows before a waiting block's row hold no slot for long and the rest of its row gets one. (A ticket
// counter taken by every block would make the order explicit; a first version had one, and the row's last block
// publishing the merged values for the others to wait on: ZLPR 1024x32768 took 224 us on an H200, against 164 us
// now.)
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <limits>

namespace torchxc {
namespace cuda {

constexpr int kCoopThreads = 256, kCoopItems = 16, kCoopChunk = kCoopThreads * kCoopItems;

// Rows longer than this take an op's cooperative path where the row qualifies: the environment variable
// TORCHXC_CUDA_COOP_ABOVE, read at every call, for tuning and for testing the path on short rows (0) or the paths it
// replaces (a value above every row length); without it, the op's own default. On an H200
// (tools/tune_split_threshold.py, 2026-11-30) the cooperative path lost to the register and split paths everywhere
// except sparsemax's float32 backward on rows of 32768 and more (0.75-0.84x their time at 256-4096 rows of 32768, 0.97x
// at 64 of 2^20), so that is the only default that takes it; most likely the waits cost more than the overlap gains
// (1024x32768 float32: ZLPR 164 us against 137 us in registers; sparsemax forward 255 us against 119 us, and 2.19 ms
// against 0.48 ms split at 64 rows of 2^20, where one block searches the candidates of 256 chunks while the others
// wait).
constexpr int64_t kCoopNever = std::numeric_limits<int64_t>::max();

inline int64_t cuda_coop_above(int64_t default_above) {
  const char* s = std::getenv("TORCHXC_CUDA_COOP_ABOVE");
  return s ? std::atoll(s) : default_above;
}

// Blocks of the kernel K (kCoopThreads threads, no dynamic shared memory) resident at once on the current device,
// cached per device.
template <auto K>
int64_t coop_resident_blocks() {
  static std::atomic<int64_t> cache[64];
  const int dev = c10::cuda::current_device();
  std::atomic<int64_t>* slot = dev < 64 ? &cache[dev] : nullptr;
  int64_t n = slot ? slot->load(std::memory_order_relaxed) : 0;
  if (n > 0) return n;
  int per_sm = 0, sms = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, K, kCoopThreads, 0));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  n = static_cast<int64_t>(per_sm) * sms;
  if (slot && n > 0) slot->store(n, std::memory_order_relaxed);
  return n;
}

// Whether rows of d values (rows of them) take kernel K's cooperative path (default_above: see cuda_coop_above).
template <auto K>
bool coop_fits(int64_t rows, int64_t d, int64_t default_above) {
  if (d == 0 || d <= cuda_coop_above(default_above)) return false;
  const int64_t nchunks = (d + kCoopChunk - 1) / kCoopChunk;
  return rows * nchunks <= std::numeric_limits<int32_t>::max() && 2 * nchunks <= coop_resident_blocks<K>();
}

// Scratch of one cooperative launch, carved from one byte tensor: `counters` ints per row, zeroed on the stream (one
// memset), then `floats` acc_t values per row (16-byte aligned).
template <typename acc_t>
struct CoopScratch {
  at::Tensor buf;
  int* count;
  acc_t* data;

  CoopScratch(const at::Tensor& like, int64_t rows, int counters, int64_t floats, cudaStream_t stream) {
    const int64_t counter_bytes = (4 * rows * counters + 15) / 16 * 16;
    buf = at::empty({counter_bytes + rows * floats * static_cast<int64_t>(sizeof(acc_t))},
                    like.options().dtype(at::kByte));
    char* base = static_cast<char*>(buf.mutable_data_ptr());
    C10_CUDA_CHECK(cudaMemsetAsync(base, 0, counter_bytes, stream));
    count = reinterpret_cast<int*>(base);
    data = reinterpret_cast<acc_t*>(base + counter_bytes);
  }
};

// The block's task: chunk `chunk` of row `row`, values [c0, c0 + len) of the row (len < kCoopChunk in the last one).
struct CoopTask {
  int64_t row;
  int chunk;
  int64_t c0, len;
};

__device__ __forceinline__ CoopTask coop_task(int nchunks, int64_t d) {
  CoopTask t;
  t.row = static_cast<int64_t>(blockIdx.x) / nchunks;
  t.chunk = static_cast<int>(blockIdx.x % static_cast<unsigned>(nchunks));
  t.c0 = static_cast<int64_t>(t.chunk) * kCoopChunk;
  t.len = d - t.c0 < kCoopChunk ? d - t.c0 : kCoopChunk;
  return t;
}

// Thread 0, after writing what its block publishes: makes it visible, then counts the block in *counter; returns the
// count before (nchunks - 1: the last chunk of the row), and when last, orders its later reads after the others'.
__device__ __forceinline__ int coop_arrive(int* counter, int nchunks) {
  __threadfence();
  const int before = atomicAdd(counter, 1);
  if (before == nchunks - 1) __threadfence();
  return before;
}

// Thread 0: waits until *counter reaches `target`, then orders its later reads after the writes it announced.
__device__ __forceinline__ void coop_wait(const int* counter, int target) {
  while (*reinterpret_cast<const volatile int*>(counter) < target) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
    __nanosleep(100);
#endif
  }
  __threadfence();
}

// A load through L2 only: values another block of the running kernel wrote (plain loads may hit a stale L1 line).
template <typename T>
__device__ __forceinline__ T load_cg(const T* p) {
  if constexpr (sizeof(T) == 2) {
    const unsigned short bits = __ldcg(reinterpret_cast<const unsigned short*>(p));
    T v;
    memcpy(&v, &bits, 2);
    return v;
  } else {
    return __ldcg(p);
  }
}

}  // namespace cuda
}  // namespace torchxc
