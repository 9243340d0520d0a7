#include "mlxn/core/pool.h"

#include <bit>
#include <cstdlib>
#include <map>
#include <mutex>

#include "backend/cuda/runtime.h"
#include "mlxn/core/buffer.h"
#include "mlxn/core/error.h"

namespace mlxn {

namespace {

constexpr int64_t kGranule = 256;  // alignment of every block and arena sub-allocation

int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

std::string bytes_str(int64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    ++u;
  }
  char text[32];
  std::snprintf(text, sizeof text, u == 0 ? "%.0f %s" : "%.2f %s", v, units[u]);
  return text;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
Allocation::Allocation(void* data, int64_t size, int64_t requested, Stream stream, Release release)
    : data_(data),
      size_(size),
      requested_(requested),
      stream_(std::move(stream)),
      release_(std::move(release)) {}

Allocation::~Allocation() {
  if (release_) release_(*this);
}

void Allocation::record_stream(const Stream& stream) {
  if (stream == stream_) return;
  for (const Stream& s : other_streams_)
    if (s == stream) return;
  other_streams_.push_back(stream);
}

// ---------------------------------------------------------------------------------------------
namespace detail {

struct FreeBlock {
  void* data = nullptr;
  int64_t size = 0;
  Stream owner;
  std::optional<Event> owner_done;  // completes when the owner's work before the free is done
  std::vector<Event> others_done;   // same, for other streams that used the block
  bool needs_device_sync = false;   // freed during capture: no event could be recorded

  // While `stream` captures a graph no event may be queried: only a block this stream freed,
  // with no other stream's use pending, is known to be safe (the graph runs after that use).
  bool reusable_during_capture(const Stream& stream) const {
    return !needs_device_sync && others_done.empty() && stream == owner;
  }
  bool reusable_on(const Stream& stream) const {
    if (needs_device_sync) return false;
    for (const Event& e : others_done)
      if (!e.query()) return false;
    if (stream == owner) return true;
    return !owner_done || owner_done->query();
  }
};

struct PoolCore : std::enable_shared_from_this<PoolCore> {
  Device device;
  mutable std::mutex mutex;
  std::multimap<int64_t, FreeBlock> free_blocks;  // by size
  PoolStats stats;
  std::optional<int64_t> limit;

  explicit PoolCore(Device d) : device(d) {}
  ~PoolCore() { release_cached(); }

  void* device_alloc(int64_t bytes, std::string* error) {
    if (device.is_cpu()) {
      void* p = std::aligned_alloc(kGranule, static_cast<size_t>(bytes));
      if (!p && error) *error = "host allocation failed";
      return p;
    }
    return cuda_runtime::malloc_device(device.index, static_cast<size_t>(bytes), error);
  }

  void device_free(void* p) {
    ++stats.device_frees;
    if (device.is_cpu()) {
      std::free(p);
    } else {
      cuda_runtime::free_device(device.index, p);
    }
  }

  // Caller holds the mutex.
  int64_t release_cached() {
    int64_t released = 0;
    bool synced = false;
    for (auto& [size, block] : free_blocks) {
      if (block.needs_device_sync && !synced) {
        cuda_runtime::device_synchronize(device.index);
        synced = true;
      }
      if (block.owner_done) block.owner_done->synchronize();
      for (const Event& e : block.others_done) e.synchronize();
      device_free(block.data);
      released += size;
    }
    free_blocks.clear();
    stats.cached_bytes = 0;
    return released;
  }

  [[noreturn]] void throw_oom(int64_t capacity, int64_t requested, const std::string& why) {
    std::string what = "out of memory on " + device.str() + ": cannot allocate " +
                       bytes_str(capacity) + " (request " + bytes_str(requested) + "); in use " +
                       bytes_str(stats.in_use_bytes) + ", cached " + bytes_str(stats.cached_bytes);
    if (limit) what += ", pool limit " + bytes_str(*limit);
    if (device.is_cuda()) {
      size_t free_bytes = 0, total_bytes = 0;
      cuda_runtime::mem_get_info(device.index, &free_bytes, &total_bytes);
      what += "; device has " + bytes_str(static_cast<int64_t>(free_bytes)) + " free of " +
              bytes_str(static_cast<int64_t>(total_bytes));
    }
    if (!why.empty()) what += " (" + why + ")";
    throw Error("pool", what);
  }

  void release(Allocation& a) {
    std::lock_guard lock(mutex);
    stats.in_use_bytes -= a.size();
    stats.requested_bytes -= a.requested();
    FreeBlock block;
    block.data = a.data();
    block.size = a.size();
    block.owner = a.stream();
    try {
      if (device.is_cuda()) {
        auto record = [&](const Stream& s) -> std::optional<Event> {
          if (s.is_capturing()) {
            block.needs_device_sync = true;
            return std::nullopt;
          }
          Event e(device, /*timing=*/false);
          e.record(s);
          return e;
        };
        block.owner_done = record(a.stream());
        for (const Stream& s : a.other_streams())
          if (auto e = record(s)) block.others_done.push_back(std::move(*e));
      }
    } catch (const Error&) {
      // The context is unusable (e.g. program teardown): dropping the block is the safe choice.
      return;
    }
    stats.cached_bytes += block.size;
    free_blocks.emplace(block.size, std::move(block));
  }

  std::shared_ptr<Allocation> allocate(int64_t bytes, const Stream& stream, AllocationKind kind) {
    if (bytes < 0) throw Error("pool", "negative allocation size " + std::to_string(bytes));
    if (stream.device() != device) {
      throw Error("pool",
                  "stream of " + stream.device().str() + " used with the pool of " + device.str());
    }
    const int64_t capacity = kind == AllocationKind::cached
                                 ? BufferPool::size_class(bytes)
                                 : round_up(std::max<int64_t>(bytes, 1), kGranule);
    const bool capturing = device.is_cuda() && stream.is_capturing();
    std::lock_guard lock(mutex);
    ++stats.allocations;
    void* data = nullptr;
    auto [first, last] = free_blocks.equal_range(capacity);
    for (auto it = first; it != last; ++it) {
      if (capturing ? it->second.reusable_during_capture(stream) : it->second.reusable_on(stream)) {
        data = it->second.data;
        free_blocks.erase(it);
        stats.cached_bytes -= capacity;
        ++stats.cache_hits;
        break;
      }
    }
    if (!data) {
      if (limit && stats.in_use_bytes + stats.cached_bytes + capacity > *limit) release_cached();
      if (limit && stats.in_use_bytes + capacity > *limit) throw_oom(capacity, bytes, "");
      std::string error;
      data = device_alloc(capacity, &error);
      if (!data && stats.cached_bytes > 0) {
        release_cached();
        data = device_alloc(capacity, &error);
      }
      if (!data) throw_oom(capacity, bytes, error);
      ++stats.device_allocations;
    }
    stats.in_use_bytes += capacity;
    stats.requested_bytes += bytes;
    stats.peak_in_use_bytes = std::max(stats.peak_in_use_bytes, stats.in_use_bytes);
    auto self = shared_from_this();
    return std::make_shared<Allocation>(data, capacity, bytes, stream,
                                        [self](Allocation& a) { self->release(a); });
  }
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------
BufferPool::BufferPool(Device device) {
  require_device(device, "pool");
  core_ = std::make_shared<detail::PoolCore>(device);
}

BufferPool::~BufferPool() {
  std::lock_guard lock(core_->mutex);
  try {
    core_->release_cached();
  } catch (const Error&) {
  }
}

BufferPool& BufferPool::for_device(Device device) {
  static std::mutex mutex;
  static auto* pools = new std::map<std::pair<int, int>, BufferPool*>;  // never destroyed
  std::lock_guard lock(mutex);
  const auto key = std::make_pair(static_cast<int>(device.kind), device.index);
  auto it = pools->find(key);
  if (it == pools->end()) it = pools->emplace(key, new BufferPool(device)).first;
  return *it->second;
}

std::shared_ptr<Allocation> BufferPool::allocate(int64_t bytes, const Stream& stream,
                                                 AllocationKind kind) {
  return core_->allocate(bytes, stream, kind);
}

int64_t BufferPool::trim() {
  std::lock_guard lock(core_->mutex);
  return core_->release_cached();
}

PoolStats BufferPool::stats() const {
  std::lock_guard lock(core_->mutex);
  return core_->stats;
}

void BufferPool::set_limit(std::optional<int64_t> bytes) {
  std::lock_guard lock(core_->mutex);
  core_->limit = bytes;
}

Device BufferPool::device() const { return core_->device; }

int64_t BufferPool::size_class(int64_t bytes) {
  if (bytes <= 4096) return round_up(std::max<int64_t>(bytes, 1), kGranule);
  const auto top = static_cast<int64_t>(std::bit_floor(static_cast<uint64_t>(bytes)));
  return round_up(bytes, std::max<int64_t>(top / 8, kGranule));
}

// ---------------------------------------------------------------------------------------------
struct ScratchArena::State {
  std::shared_ptr<Allocation> block;
  int64_t used = 0;
  int64_t high_water = 0;
  int64_t live = 0;
};

ScratchArena::ScratchArena(int64_t capacity_bytes, const Stream& stream, BufferPool* pool) {
  BufferPool& p = pool ? *pool : BufferPool::for_device(stream.device());
  state_ = std::make_shared<State>();
  state_->block = p.allocate(capacity_bytes, stream, AllocationKind::exact);
}

Buffer ScratchArena::allocate(const std::vector<int64_t>& shape, DType dtype) {
  const int64_t bytes = shape_numel(shape) * dtype_size(dtype);
  const int64_t start = round_up(state_->used, kGranule);
  if (start + bytes > state_->block->size()) {
    throw Error("arena", "out of scratch space: " + shape_str(shape) + " " +
                             std::string(dtype_name(dtype)) + " needs " + bytes_str(bytes) + ", " +
                             bytes_str(state_->used) + " of " + bytes_str(state_->block->size()) +
                             " already used");
  }
  state_->used = start + bytes;
  state_->high_water = std::max(state_->high_water, state_->used);
  ++state_->live;
  auto* data = static_cast<char*>(state_->block->data()) + start;
  auto state = state_;
  auto allocation = std::make_shared<Allocation>(data, bytes, bytes, state_->block->stream(),
                                                 [state](Allocation&) { --state->live; });
  return Buffer(std::move(allocation), shape, contiguous_strides(shape), dtype, 0);
}

void ScratchArena::reset() {
  if (state_->live != 0) {
    throw Error("arena", "reset() while " + std::to_string(state_->live) +
                             " buffer(s) from this arena are alive");
  }
  state_->used = 0;
}

int64_t ScratchArena::capacity_bytes() const { return state_->block->size(); }
int64_t ScratchArena::used_bytes() const { return state_->used; }
int64_t ScratchArena::high_water_bytes() const { return state_->high_water; }
int64_t ScratchArena::live_buffers() const { return state_->live; }

}  // namespace mlxn
