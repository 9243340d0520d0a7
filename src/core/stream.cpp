#include "mlxn/core/stream.h"

#include <atomic>
#include <map>
#include <mutex>

#include "backend/cuda/runtime.h"
#include "core/stream_state.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/error.h"

namespace mlxn {

namespace detail {

StreamState::~StreamState() {
  if (handle) {
    try {
      cuda_runtime::stream_destroy(device.index, handle);
    } catch (const Error&) {
      // Destructors must not throw; a failing destroy means the context is already gone.
    }
  }
}

struct EventState {
  Device device;
  void* handle = nullptr;  // cudaEvent_t
  bool recorded = false;
  ~EventState() {
    if (handle) {
      try {
        cuda_runtime::event_destroy(device.index, handle);
      } catch (const Error&) {
      }
    }
  }
};

}  // namespace detail

namespace {
std::atomic<uint64_t> next_stream_id{1};
}

Stream::Stream(Device device) {
  require_device(device, "stream");
  state_ = std::make_shared<detail::StreamState>();
  state_->device = device;
  state_->id = next_stream_id++;
  if (device.is_cuda()) state_->handle = cuda_runtime::stream_create(device.index);
}

Device Stream::device() const { return state_->device; }
uint64_t Stream::id() const { return state_->id; }
void* Stream::native_handle() const { return state_->handle; }

void Stream::synchronize() const {
  if (state_->capture) throw Error("stream", "synchronize() while a graph is capturing the stream");
  if (state_->handle) cuda_runtime::stream_synchronize(state_->device.index, state_->handle);
  raise_pending_device_error(state_->device);
}

void Stream::wait(const Event& event) const {
  if (event.device() != device()) {
    throw Error("stream", "cannot wait on an event of " + event.device().str() + " from a " +
                              device().str() + " stream");
  }
  if (state_->handle && event.native_handle())
    cuda_runtime::stream_wait_event(state_->handle, event.native_handle());
}

bool Stream::is_capturing() const { return state_->capture != nullptr; }

void Stream::submit_host(std::function<void()> work) const {
  if (!device().is_cpu()) throw Error("stream", "host work submitted to " + device().str());
  if (state_->capture) {
    state_->capture->host_work.push_back(std::move(work));
  } else {
    work();
  }
}

void Stream::retain_for_capture(const std::shared_ptr<Allocation>& allocation) const {
  if (state_->capture && allocation) state_->capture->retained.push_back(allocation);
}

Stream default_stream(Device device) {
  static std::mutex mutex;
  static std::map<std::pair<int, int>, Stream>* streams = new std::map<std::pair<int, int>, Stream>;
  std::lock_guard lock(mutex);
  const auto key = std::make_pair(static_cast<int>(device.kind), device.index);
  auto it = streams->find(key);
  if (it == streams->end()) it = streams->emplace(key, Stream(device)).first;
  return it->second;
}

Event::Event(Device device, bool timing) {
  require_device(device, "event");
  state_ = std::make_shared<detail::EventState>();
  state_->device = device;
  if (device.is_cuda()) state_->handle = cuda_runtime::event_create(device.index, timing);
}

void Event::record(const Stream& stream) {
  if (stream.device() != state_->device) {
    throw Error("event", "event of " + state_->device.str() + " recorded on a " +
                             stream.device().str() + " stream");
  }
  if (state_->handle) cuda_runtime::event_record(state_->handle, stream.native_handle());
  state_->recorded = true;
}

bool Event::query() const {
  return state_->handle ? cuda_runtime::event_query(state_->handle) : true;
}

void Event::synchronize() const {
  if (state_->handle) cuda_runtime::event_synchronize(state_->handle);
}

float Event::elapsed_ms(const Event& end) const {
  if (!state_->handle || !end.state_->handle) return 0.0f;
  return cuda_runtime::event_elapsed_ms(state_->handle, end.state_->handle);
}

void* Event::native_handle() const { return state_->handle; }
Device Event::device() const { return state_->device; }

}  // namespace mlxn
