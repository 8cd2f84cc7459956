#include "buffer_pool.h"

#include "environment.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <cstdlib>
#include <list>
#include <map>
#include <mutex>
#include <unordered_map>

#ifdef __linux__
#include <pthread.h>
#include <sys/mman.h>
#endif

namespace rnnkernels {
namespace {

constexpr size_t kHugePage = size_t{1} << 21;

class BufferPool;
// The process's pool, never destroyed: tensors may outlive static destruction.
BufferPool& pool();

// Buffers in whole huge pages, aligned to one, so that the kernel can back all of each with
// them (madvise MADV_HUGEPAGE; where it cannot, the hint changes nothing). Free ones are reused
// for a request of their size or up to an eighth less, most recently freed first; beyond the
// bound on free bytes the least recently freed go back to the system.
class BufferPool final : public c10::Allocator {
 public:
  BufferPool()
      : limit_(environment_count("RNNKERNELS_CPU_BUFFER_CACHE_BYTES", kDefaultBufferCacheBytes,
                                 0)) {}

  c10::DataPtr allocate(size_t bytes) override {
    // A resized storage asks its allocator again, for any size.
    if (bytes < kMinPooledBytes) return c10::GetCPUAllocator()->allocate(bytes);
    const size_t size = (bytes + kHugePage - 1) / kHugePage * kHugePage;
    void* data = take(size);
    if (data == nullptr) data = fresh(size);
    size_t allocated = 0;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      in_use_[data] = {size, bytes};
      in_use_bytes_ += size;
      allocated = in_use_bytes_;
    }
    // As the default CPU allocator does, for torch.profiler's memory view.
    c10::reportMemoryUsageToProfiler(data, static_cast<int64_t>(bytes), allocated, 0,
                                     c10::Device(c10::DeviceType::CPU));
    return {data, data, &BufferPool::release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void release_free() {
    const std::lock_guard<std::mutex> lock(mutex_);
    while (!free_.empty()) evict_oldest();
  }

  size_t free_bytes() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return free_bytes_;
  }

  size_t limit() const { return limit_; }

  void lock() { mutex_.lock(); }
  void unlock() { mutex_.unlock(); }

 private:
  struct Use {
    size_t size, requested;
  };
  struct Block {
    void* data;
    size_t size;
  };
  using Blocks = std::list<Block>;

  static void release(void* data) { pool().give_back(data); }

  static void* fresh(size_t size) {
    void* data = std::aligned_alloc(kHugePage, size);
    // The error torch's own CPU allocator raises.
    TORCH_CHECK(data != nullptr,
                "rnnkernels' CPU buffer pool: can't allocate memory: you tried to allocate ", size,
                " bytes.");
#ifdef __linux__
    madvise(data, size, MADV_HUGEPAGE);
#endif
    return data;
  }

  void* take(size_t size) {
    const std::lock_guard<std::mutex> lock(mutex_);
    const auto found = by_size_.lower_bound(size);
    if (found == by_size_.end() || found->first - found->first / 8 > size) return nullptr;
    void* data = found->second->data;
    free_bytes_ -= found->first;
    free_.erase(found->second);
    by_size_.erase(found);
    return data;
  }

  void give_back(void* data) {
    size_t allocated = 0;
    Use use{};
    void* unpooled = data;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      const auto found = in_use_.find(data);
      use = found->second;
      in_use_.erase(found);
      in_use_bytes_ -= use.size;
      allocated = in_use_bytes_;
      if (use.size <= limit_) {
        free_.push_front({data, use.size});
        by_size_.emplace(use.size, free_.begin());
        free_bytes_ += use.size;
        while (free_bytes_ > limit_) evict_oldest();
        unpooled = nullptr;
      }
    }
    c10::reportMemoryUsageToProfiler(data, -static_cast<int64_t>(use.requested), allocated, 0,
                                     c10::Device(c10::DeviceType::CPU));
    std::free(unpooled);
  }

  // With mutex_ held.
  void evict_oldest() {
    const Block block = free_.back();
    auto range = by_size_.equal_range(block.size);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second->data == block.data) {
        by_size_.erase(it);
        break;
      }
    }
    free_.pop_back();
    free_bytes_ -= block.size;
    std::free(block.data);
  }

  const size_t limit_;
  std::mutex mutex_;
  Blocks free_;                                      // most recently freed first
  std::multimap<size_t, Blocks::iterator> by_size_;  // free_'s blocks by size
  size_t free_bytes_ = 0;
  std::unordered_map<void*, Use> in_use_;
  size_t in_use_bytes_ = 0;
};

BufferPool& pool() {
  static BufferPool* instance = [] {
    auto* created = new BufferPool();
#ifdef __linux__
    // A process forked while another thread held the lock (a DataLoader's workers, say) would
    // find it held forever: fork takes it first, as glibc's malloc does its own.
    pthread_atfork([] { pool().lock(); }, [] { pool().unlock(); }, [] { pool().unlock(); });
#endif
    return created;
  }();
  return *instance;
}

}  // namespace

at::Tensor empty_pooled(at::IntArrayRef sizes, const at::TensorOptions& options) {
  const size_t bytes = c10::multiply_integers(sizes) * options.dtype().itemsize();
  if (bytes < kMinPooledBytes) return at::empty(sizes, options);
  return at::detail::empty_generic(sizes, &pool(),
                                   c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   options.dtype().toScalarType(), std::nullopt);
}

void release_pooled_buffers() { pool().release_free(); }

size_t pooled_free_bytes() { return pool().free_bytes(); }

size_t pooled_free_bytes_limit() { return pool().limit(); }

}  // namespace rnnkernels
