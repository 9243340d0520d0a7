// Memory: Allocation (one block, owned by a shared_ptr), BufferPool (a caching allocator, one per
// device) and ScratchArena (bump allocation for per-step scratch).
//
// Stream safety: a block freed on stream S is handed out again at once to later work on S
// (stream order makes that safe) but to another stream only after the work queued on S before
// the free has completed (an event recorded at free time). Buffers used on more streams than the
// one they were allocated on must say so with Buffer::record_stream().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "mlxn/core/device.h"
#include "mlxn/core/dtype.h"
#include "mlxn/core/stream.h"

namespace mlxn {

namespace detail {
struct PoolCore;
}

class Allocation {
 public:
  using Release = std::function<void(Allocation&)>;
  Allocation(void* data, int64_t size, int64_t requested, Stream stream, Release release);
  ~Allocation();
  Allocation(const Allocation&) = delete;
  Allocation& operator=(const Allocation&) = delete;

  void* data() const { return data_; }
  int64_t size() const { return size_; }            // usable bytes (>= requested)
  int64_t requested() const { return requested_; }  // bytes the caller asked for
  Device device() const { return stream_.device(); }
  const Stream& stream() const { return stream_; }  // the stream it was allocated on
  // Streams other than stream() that used this memory.
  const std::vector<Stream>& other_streams() const { return other_streams_; }
  void record_stream(const Stream& stream);

 private:
  void* data_;
  int64_t size_;
  int64_t requested_;
  Stream stream_;
  std::vector<Stream> other_streams_;
  Release release_;
};

enum class AllocationKind {
  cached,  // rounded up to a size class; returned to the cache when freed (activations, scratch)
  exact,   // rounded to 256 bytes only: no size-class waste (weights, KV caches)
};

struct PoolStats {
  int64_t in_use_bytes = 0;        // usable bytes of live allocations
  int64_t requested_bytes = 0;     // bytes callers asked for, of live allocations
  int64_t cached_bytes = 0;        // freed blocks kept for reuse
  int64_t peak_in_use_bytes = 0;   // highest in_use_bytes seen
  int64_t allocations = 0;         // allocate() calls
  int64_t cache_hits = 0;          // of those, served from the cache
  int64_t device_allocations = 0;  // blocks taken from the device (cudaMalloc / aligned_alloc)
  int64_t device_frees = 0;        // blocks given back to the device
};

class BufferPool {
 public:
  // A pool of its own (tests, isolated subsystems). Allocations may outlive the pool object.
  explicit BufferPool(Device device);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // The program-wide pool of `device`.
  static BufferPool& for_device(Device device);

  // Throws Error("[pool] out of memory ...") with the sizes when neither the cache, the limit
  // nor the device can serve the request (after releasing the cache once).
  std::shared_ptr<Allocation> allocate(int64_t bytes, const Stream& stream,
                                       AllocationKind kind = AllocationKind::cached);
  // Gives every cached block back to the device (waiting for pending work on it first).
  // Returns the bytes released.
  int64_t trim();
  PoolStats stats() const;
  // Caps in-use + cached bytes; nullopt removes the cap.
  void set_limit(std::optional<int64_t> bytes);
  Device device() const;

  // The usable size a cached request of `bytes` gets: multiples of 256 up to 4 KiB, then eight
  // classes per power of two (at most 12.5 % over the request).
  static int64_t size_class(int64_t bytes);

 private:
  std::shared_ptr<detail::PoolCore> core_;
};

class Buffer;

// Bump allocation from one block, for scratch that lives for one decode step. reset() makes the
// whole block free again; it refuses while buffers handed out since the last reset are alive, so
// a stale view can never alias new scratch. Not thread-safe.
class ScratchArena {
 public:
  ScratchArena(int64_t capacity_bytes, const Stream& stream,
               BufferPool* pool = nullptr /* the device's pool */);

  // A contiguous buffer, 256-byte aligned. Throws Error("[arena] ...") when the block is full.
  Buffer allocate(const std::vector<int64_t>& shape, DType dtype);
  void reset();

  int64_t capacity_bytes() const;
  int64_t used_bytes() const;
  int64_t high_water_bytes() const;  // most bytes used between resets, over the arena's life
  int64_t live_buffers() const;

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace mlxn
