// Graph: capture a sequence of op launches on a stream once, replay it many times at a fraction
// of the launch cost (a decode step is hundreds of small kernels).
//
// On a GPU this is a CUDA graph; on the CPU the recorded ops are replayed in order. Nothing runs
// while capturing. A graph keeps alive every buffer its ops touched.
//
// What may change between replays without capturing again:
//  - the contents of any buffer the graph reads (inputs, positions, page tables);
//  - scalars passed to ops as ScalarArg::from_buffer (read from device memory at run time).
// Pointers, shapes and immediate scalars are frozen at capture. To change those, call update():
// it records again and patches the executable graph in place (cudaGraphExecUpdate) when the
// topology is unchanged, or builds a new one when it is not; the result says which happened.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "mlxn/core/stream.h"

namespace mlxn {

class Graph {
 public:
  enum class UpdateResult { updated_in_place, reinstantiated };

  // Runs `record` with `stream` in capture mode and builds the replayable graph from the ops it
  // launched on that stream. If `record` throws, capture is abandoned and the error propagates.
  static Graph capture(const Stream& stream, const std::function<void()>& record);

  Graph(Graph&&) noexcept;
  Graph& operator=(Graph&&) noexcept;
  ~Graph();

  // Enqueues the whole sequence on `stream` (same device as the capture).
  void replay(const Stream& stream) const;
  UpdateResult update(const Stream& stream, const std::function<void()>& record);
  // Kernel/memcpy nodes on a GPU, recorded ops on the CPU.
  int64_t node_count() const;
  Device device() const;

 private:
  struct Impl;
  explicit Graph(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlxn
