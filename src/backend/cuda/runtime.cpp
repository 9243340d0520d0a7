#include "backend/cuda/runtime.h"

#include <cublas_v2.h>

#include <cstring>

#include "backend/cuda/cuda_check.h"

namespace mlxn {

namespace cuda_check {

namespace {
std::string base_name(const char* file) {
  const char* slash = std::strrchr(file, '/');
  return slash ? slash + 1 : file;
}
}  // namespace

void throw_cuda_error(cudaError_t result, const char* call, const char* file, int line) {
  throw Error("cuda", std::string(call) + " failed: " + cudaGetErrorName(result) + " (" +
                          cudaGetErrorString(result) + ") at " + base_name(file) + ":" +
                          std::to_string(line));
}

void throw_cublas_error(cublasStatus_t result, const char* call, const char* file, int line) {
  throw Error("cublas", std::string(call) + " failed: " + cublasGetStatusName(result) + " (" +
                            cublasGetStatusString(result) + ") at " + base_name(file) + ":" +
                            std::to_string(line));
}

}  // namespace cuda_check

namespace cuda_runtime {

namespace {
// Runtime calls act on the calling thread's current device; every entry point that touches a
// particular device selects it first.
void select(int device) { MLXN_CUDA_CHECK(cudaSetDevice(device)); }
cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }
cudaEvent_t as_event(void* e) { return static_cast<cudaEvent_t>(e); }
}  // namespace

bool built_with_cuda() { return true; }

int device_count(std::string* reason) {
  int count = 0;
  const cudaError_t result = cudaGetDeviceCount(&count);
  if (result != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky-free error so later calls start clean
    if (reason) *reason = std::string(cudaGetErrorName(result)) + ": " + cudaGetErrorString(result);
    return 0;
  }
  if (count == 0 && reason) *reason = "the CUDA driver reports no device";
  return count;
}

DeviceProperties properties(int device) {
  cudaDeviceProp prop{};
  MLXN_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceProperties p;
  p.device = Device::cuda(device);
  p.name = prop.name;
  p.compute_major = prop.major;
  p.compute_minor = prop.minor;
  p.multiprocessors = prop.multiProcessorCount;
  p.shared_memory_per_block_optin = static_cast<int64_t>(prop.sharedMemPerBlockOptin);
  p.shared_memory_per_multiprocessor = static_cast<int64_t>(prop.sharedMemPerMultiprocessor);
  p.l2_cache_bytes = prop.l2CacheSize;
  p.total_memory_bytes = static_cast<int64_t>(prop.totalGlobalMem);
  p.max_threads_per_multiprocessor = prop.maxThreadsPerMultiProcessor;
  int clock_khz = 0;
  MLXN_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, device));
  p.clock_khz = clock_khz;
  int bus_bits = 0;
  MLXN_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
  p.memory_bus_bits = bus_bits;
  return p;
}

void mem_get_info(int device, size_t* free_bytes, size_t* total_bytes) {
  select(device);
  MLXN_CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
}

// An op may need fresh workspace (or the device's error flag) for the first time while a graph
// is being captured. Allocations are not part of the capture, so this thread may make them
// under the relaxed capture mode; the thread's mode is restored when the scope ends.
class RelaxedCapture {
 public:
  RelaxedCapture() { MLXN_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode_)); }
  ~RelaxedCapture() { (void)cudaThreadExchangeStreamCaptureMode(&mode_); }
  RelaxedCapture(const RelaxedCapture&) = delete;
  RelaxedCapture& operator=(const RelaxedCapture&) = delete;

 private:
  cudaStreamCaptureMode mode_ = cudaStreamCaptureModeRelaxed;
};

void* malloc_device(int device, size_t bytes, std::string* error) {
  select(device);
  void* ptr = nullptr;
  cudaError_t result;
  {
    RelaxedCapture relaxed;
    result = cudaMalloc(&ptr, bytes);
  }
  if (result == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    if (error) *error = cudaGetErrorString(result);
    return nullptr;
  }
  MLXN_CUDA_CHECK(result);
  return ptr;
}

void free_device(int device, void* ptr) {
  select(device);
  MLXN_CUDA_CHECK(cudaFree(ptr));
}

void* malloc_host_mapped(size_t bytes) {
  void* ptr = nullptr;
  RelaxedCapture relaxed;
  MLXN_CUDA_CHECK(cudaHostAlloc(&ptr, bytes, cudaHostAllocMapped | cudaHostAllocPortable));
  std::memset(ptr, 0, bytes);
  return ptr;
}

void* stream_create(int device) {
  select(device);
  cudaStream_t stream = nullptr;
  MLXN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  return stream;
}

void stream_destroy(int device, void* stream) {
  select(device);
  MLXN_CUDA_CHECK(cudaStreamDestroy(as_stream(stream)));
}

void stream_synchronize(int device, void* stream) {
  select(device);
  MLXN_CUDA_CHECK(cudaStreamSynchronize(as_stream(stream)));
}

bool stream_is_capturing(void* stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  MLXN_CUDA_CHECK(cudaStreamIsCapturing(as_stream(stream), &status));
  return status != cudaStreamCaptureStatusNone;
}

void stream_wait_event(void* stream, void* event) {
  MLXN_CUDA_CHECK(cudaStreamWaitEvent(as_stream(stream), as_event(event), 0));
}

void* event_create(int device, bool timing) {
  select(device);
  cudaEvent_t event = nullptr;
  MLXN_CUDA_CHECK(
      cudaEventCreateWithFlags(&event, timing ? cudaEventDefault : cudaEventDisableTiming));
  return event;
}

void event_destroy(int device, void* event) {
  select(device);
  MLXN_CUDA_CHECK(cudaEventDestroy(as_event(event)));
}

void event_record(void* event, void* stream) {
  MLXN_CUDA_CHECK(cudaEventRecord(as_event(event), as_stream(stream)));
}

bool event_query(void* event) {
  const cudaError_t result = cudaEventQuery(as_event(event));
  if (result == cudaErrorNotReady) {
    (void)cudaGetLastError();
    return false;
  }
  MLXN_CUDA_CHECK(result);
  return true;
}

void event_synchronize(void* event) { MLXN_CUDA_CHECK(cudaEventSynchronize(as_event(event))); }

float event_elapsed_ms(void* start, void* end) {
  float ms = 0;
  MLXN_CUDA_CHECK(cudaEventElapsedTime(&ms, as_event(start), as_event(end)));
  return ms;
}

void memcpy_async(int device, void* dst, const void* src, size_t bytes, CopyKind kind,
                  void* stream) {
  select(device);
  const cudaMemcpyKind k = kind == CopyKind::host_to_device   ? cudaMemcpyHostToDevice
                           : kind == CopyKind::device_to_host ? cudaMemcpyDeviceToHost
                                                              : cudaMemcpyDeviceToDevice;
  MLXN_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, k, as_stream(stream)));
}

void graph_begin_capture(int device, void* stream) {
  select(device);
  MLXN_CUDA_CHECK(cudaStreamBeginCapture(as_stream(stream), cudaStreamCaptureModeThreadLocal));
}

void* graph_end_capture(int device, void* stream) {
  select(device);
  cudaGraph_t graph = nullptr;
  MLXN_CUDA_CHECK(cudaStreamEndCapture(as_stream(stream), &graph));
  return graph;
}

void* graph_instantiate(int device, void* graph) {
  select(device);
  cudaGraphExec_t exec = nullptr;
  MLXN_CUDA_CHECK(cudaGraphInstantiate(&exec, static_cast<cudaGraph_t>(graph), 0));
  return exec;
}

bool graph_exec_update(int device, void* exec, void* graph) {
  select(device);
  cudaGraphExecUpdateResultInfo info{};
  const cudaError_t result = cudaGraphExecUpdate(static_cast<cudaGraphExec_t>(exec),
                                                 static_cast<cudaGraph_t>(graph), &info);
  if (result == cudaErrorGraphExecUpdateFailure) {
    (void)cudaGetLastError();
    return false;
  }
  MLXN_CUDA_CHECK(result);
  return true;
}

void graph_launch(int device, void* exec, void* stream) {
  select(device);
  MLXN_CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), as_stream(stream)));
}

size_t graph_node_count(void* graph) {
  size_t count = 0;
  MLXN_CUDA_CHECK(cudaGraphGetNodes(static_cast<cudaGraph_t>(graph), nullptr, &count));
  return count;
}

void graph_destroy(int device, void* graph) {
  select(device);
  MLXN_CUDA_CHECK(cudaGraphDestroy(static_cast<cudaGraph_t>(graph)));
}

void graph_exec_destroy(int device, void* exec) {
  select(device);
  MLXN_CUDA_CHECK(cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec)));
}

void device_synchronize(int device) {
  select(device);
  MLXN_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace cuda_runtime
}  // namespace mlxn
