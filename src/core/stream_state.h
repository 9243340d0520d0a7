// Internal state behind Stream handles; Graph reads and writes the capture part.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "mlxn/core/device.h"

namespace mlxn {
class Allocation;
}

namespace mlxn::detail {

struct CaptureState {
  std::vector<std::function<void()>> host_work;       // CPU streams: the recorded ops
  std::vector<std::shared_ptr<Allocation>> retained;  // buffers the graph must keep alive
};

struct StreamState {
  Device device;
  uint64_t id = 0;
  void* handle = nullptr;                 // cudaStream_t
  std::unique_ptr<CaptureState> capture;  // set while a Graph captures this stream
  ~StreamState();
};

}  // namespace mlxn::detail
