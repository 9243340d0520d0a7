// Streams and events. A Stream is an in-order queue of work on one device: a CUDA stream on a
// GPU; on the CPU, work runs at once in submission order (or is recorded, while a Graph captures
// the stream). Stream and Event are cheap shared handles: copies refer to the same queue.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "mlxn/core/device.h"

namespace mlxn {

class Allocation;
class Event;

namespace detail {
struct StreamState;
struct EventState;
}  // namespace detail

class Stream {
 public:
  // A new stream on `device` (CUDA: a non-blocking stream of its own).
  explicit Stream(Device device = Device::cpu());

  Device device() const;
  // Unique for the life of the program; used to tell streams apart.
  uint64_t id() const;
  // cudaStream_t for a CUDA stream, nullptr for the CPU.
  void* native_handle() const;

  // Waits for all submitted work, then raises any error a kernel reported on this device since
  // the last check (see DeviceErrorState) as an mlxn::Error.
  void synchronize() const;
  // Later work on this stream waits for `event`.
  void wait(const Event& event) const;
  // True between Graph capture's begin and end on this stream.
  bool is_capturing() const;

  // CPU backend: runs `work` now, or records it when a Graph is capturing this stream.
  void submit_host(std::function<void()> work) const;
  // Keeps `allocation` alive as long as a graph being captured on this stream does. Op front
  // ends call this for every buffer they touch; it does nothing when not capturing.
  void retain_for_capture(const std::shared_ptr<Allocation>& allocation) const;

  bool operator==(const Stream& other) const { return id() == other.id(); }

  const std::shared_ptr<detail::StreamState>& state() const { return state_; }

 private:
  std::shared_ptr<detail::StreamState> state_;
};

// The stream ops use when the caller has no stream of their own: one per device, for the life
// of the program.
Stream default_stream(Device device);

class Event {
 public:
  // `timing` events can be used with elapsed_ms.
  explicit Event(Device device = Device::cpu(), bool timing = true);

  void record(const Stream& stream);
  // True once the work before the last record() has completed (always true on the CPU).
  bool query() const;
  void synchronize() const;
  // Milliseconds between two recorded events of one device (0 on the CPU).
  float elapsed_ms(const Event& end) const;
  void* native_handle() const;
  Device device() const;

 private:
  std::shared_ptr<detail::EventState> state_;
};

}  // namespace mlxn
