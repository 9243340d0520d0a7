#include "mlxn/core/graph.h"

#include <vector>

#include "backend/cuda/runtime.h"
#include "core/stream_state.h"
#include "mlxn/core/error.h"
#include "mlxn/core/pool.h"

namespace mlxn {

struct Graph::Impl {
  Device device;
  void* graph = nullptr;  // cudaGraph_t
  void* exec = nullptr;   // cudaGraphExec_t
  std::vector<std::function<void()>> host_work;
  std::vector<std::shared_ptr<Allocation>> retained;
  // Every stream the graph's work ran on (capture stream first): its buffers are recorded as
  // used on each, so the pool never hands them to other work while a replay is in flight.
  mutable std::vector<Stream> streams;

  ~Impl() { release_cuda(); }

  void release_cuda() noexcept {
    try {
      if (exec) cuda_runtime::graph_exec_destroy(device.index, exec);
      if (graph) cuda_runtime::graph_destroy(device.index, graph);
    } catch (const Error&) {
    }
    exec = nullptr;
    graph = nullptr;
  }
};

namespace {

struct Recording {
  void* graph = nullptr;
  std::vector<std::function<void()>> host_work;
  std::vector<std::shared_ptr<Allocation>> retained;
};

Recording record_on(const Stream& stream, const std::function<void()>& record) {
  auto& state = *stream.state();
  if (state.capture) throw Error("graph", "the stream is already being captured");
  const Device device = stream.device();
  state.capture = std::make_unique<detail::CaptureState>();
  if (device.is_cuda()) {
    try {
      cuda_runtime::graph_begin_capture(device.index, stream.native_handle());
    } catch (...) {
      state.capture.reset();
      throw;
    }
  }
  Recording out;
  try {
    record();
  } catch (...) {
    if (device.is_cuda()) {
      try {
        void* broken = cuda_runtime::graph_end_capture(device.index, stream.native_handle());
        if (broken) cuda_runtime::graph_destroy(device.index, broken);
      } catch (const Error&) {
      }
    }
    state.capture.reset();
    throw;
  }
  std::unique_ptr<detail::CaptureState> capture = std::move(state.capture);
  if (device.is_cuda())
    out.graph = cuda_runtime::graph_end_capture(device.index, stream.native_handle());
  out.host_work = std::move(capture->host_work);
  out.retained = std::move(capture->retained);
  return out;
}

}  // namespace

Graph::Graph(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Graph::Graph(Graph&&) noexcept = default;
Graph& Graph::operator=(Graph&&) noexcept = default;
Graph::~Graph() = default;

Graph Graph::capture(const Stream& stream, const std::function<void()>& record) {
  Recording r = record_on(stream, record);
  auto impl = std::make_unique<Impl>();
  impl->device = stream.device();
  impl->streams.push_back(stream);
  for (const auto& a : impl->retained) a->record_stream(stream);
  impl->graph = r.graph;
  impl->host_work = std::move(r.host_work);
  impl->retained = std::move(r.retained);
  if (impl->device.is_cuda())
    impl->exec = cuda_runtime::graph_instantiate(impl->device.index, impl->graph);
  return Graph(std::move(impl));
}

void Graph::replay(const Stream& stream) const {
  if (stream.device() != impl_->device) {
    throw Error("graph", "graph captured on " + impl_->device.str() + " replayed on a " +
                             stream.device().str() + " stream");
  }
  bool seen = false;
  for (const Stream& s : impl_->streams) seen = seen || s == stream;
  if (!seen) {
    impl_->streams.push_back(stream);
    for (const auto& a : impl_->retained) a->record_stream(stream);
  }
  if (impl_->device.is_cuda()) {
    cuda_runtime::graph_launch(impl_->device.index, impl_->exec, stream.native_handle());
  } else {
    for (const auto& work : impl_->host_work) stream.submit_host(work);
  }
}

Graph::UpdateResult Graph::update(const Stream& stream, const std::function<void()>& record) {
  if (stream.device() != impl_->device) {
    throw Error("graph", "graph of " + impl_->device.str() + " updated from a " +
                             stream.device().str() + " stream");
  }
  Recording r = record_on(stream, record);
  UpdateResult result = UpdateResult::updated_in_place;
  if (impl_->device.is_cuda()) {
    if (!cuda_runtime::graph_exec_update(impl_->device.index, impl_->exec, r.graph)) {
      cuda_runtime::graph_exec_destroy(impl_->device.index, impl_->exec);
      impl_->exec = nullptr;
      impl_->exec = cuda_runtime::graph_instantiate(impl_->device.index, r.graph);
      result = UpdateResult::reinstantiated;
    }
    cuda_runtime::graph_destroy(impl_->device.index, impl_->graph);
    impl_->graph = r.graph;
  } else if (r.host_work.size() != impl_->host_work.size()) {
    result = UpdateResult::reinstantiated;
  }
  impl_->host_work = std::move(r.host_work);
  // Dropping the old recording's buffers is safe even with replays in flight: the pool holds
  // freed memory back from other streams until their work is done, and every replay stream was
  // recorded on those buffers. The new buffers learn about the same streams.
  bool seen = false;
  for (const Stream& s : impl_->streams) seen = seen || s == stream;
  if (!seen) impl_->streams.push_back(stream);
  for (const auto& a : r.retained)
    for (const Stream& s : impl_->streams) a->record_stream(s);
  impl_->retained = std::move(r.retained);
  return result;
}

int64_t Graph::node_count() const {
  if (impl_->device.is_cuda())
    return static_cast<int64_t>(cuda_runtime::graph_node_count(impl_->graph));
  return static_cast<int64_t>(impl_->host_work.size());
}

Device Graph::device() const { return impl_->device; }

}  // namespace mlxn
