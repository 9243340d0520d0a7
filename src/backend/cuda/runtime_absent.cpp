// The CUDA runtime interface for a build without the CUDA backend: no devices, and any attempt
// to reach one is an error that says so.
#include "backend/cuda/runtime.h"
#include "mlxn/core/error.h"

namespace mlxn::cuda_runtime {

namespace {
[[noreturn]] void absent() {
  throw Error("cuda",
              "this build of mlx-native has no CUDA backend (nvcc was not found at "
              "configure time)");
}
}  // namespace

bool built_with_cuda() { return false; }
int device_count(std::string* reason) {
  if (reason) *reason = "built without the CUDA backend";
  return 0;
}
DeviceProperties properties(int) { absent(); }
void mem_get_info(int, size_t*, size_t*) { absent(); }
void* malloc_device(int, size_t, std::string*) { absent(); }
void free_device(int, void*) { absent(); }
void* malloc_host_mapped(size_t) { absent(); }
void* stream_create(int) { absent(); }
void stream_destroy(int, void*) { absent(); }
void stream_synchronize(int, void*) { absent(); }
bool stream_is_capturing(void*) { absent(); }
void stream_wait_event(void*, void*) { absent(); }
void* event_create(int, bool) { absent(); }
void event_destroy(int, void*) { absent(); }
void event_record(void*, void*) { absent(); }
bool event_query(void*) { absent(); }
void event_synchronize(void*) { absent(); }
float event_elapsed_ms(void*, void*) { absent(); }
void memcpy_async(int, void*, const void*, size_t, CopyKind, void*) { absent(); }
void graph_begin_capture(int, void*) { absent(); }
void* graph_end_capture(int, void*) { absent(); }
void* graph_instantiate(int, void*) { absent(); }
bool graph_exec_update(int, void*, void*) { absent(); }
void graph_launch(int, void*, void*) { absent(); }
size_t graph_node_count(void*) { absent(); }
void graph_destroy(int, void*) { absent(); }
void graph_exec_destroy(int, void*) { absent(); }
void device_synchronize(int) { absent(); }

}  // namespace mlxn::cuda_runtime
