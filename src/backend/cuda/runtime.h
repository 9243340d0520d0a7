// The narrow interface through which core/ reaches the CUDA runtime. Handles are opaque
// (cudaStream_t, cudaEvent_t, ... as void*), so core/ compiles without CUDA headers. Two
// implementations: runtime.cpp (CUDA present) and runtime_absent.cpp (built without CUDA: every
// call throws "[cuda] built without CUDA support", device_count() answers 0 with the reason).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "mlxn/core/device.h"

namespace mlxn::cuda_runtime {

bool built_with_cuda();
// Number of usable devices; 0 with `reason` set when there is no driver, no device, or no CUDA.
int device_count(std::string* reason);
DeviceProperties properties(int device);
void mem_get_info(int device, size_t* free_bytes, size_t* total_bytes);

// Returns nullptr (and the runtime's message in `error`) when the device is out of memory;
// throws on any other failure.
void* malloc_device(int device, size_t bytes, std::string* error);
void free_device(int device, void* ptr);
// Pinned host memory that kernels can write directly (used for the device error flag).
void* malloc_host_mapped(size_t bytes);

void* stream_create(int device);
void stream_destroy(int device, void* stream);
void stream_synchronize(int device, void* stream);
bool stream_is_capturing(void* stream);
void stream_wait_event(void* stream, void* event);

void* event_create(int device, bool timing);
void event_destroy(int device, void* event);
void event_record(void* event, void* stream);
bool event_query(void* event);
void event_synchronize(void* event);
float event_elapsed_ms(void* start, void* end);

enum class CopyKind { host_to_device, device_to_host, device_to_device };
void memcpy_async(int device, void* dst, const void* src, size_t bytes, CopyKind kind,
                  void* stream);

// Graph capture and replay. begin/end bracket stream capture (thread-local mode); instantiate
// makes the executable graph; update tries cudaGraphExecUpdate and returns false when the
// topology changed (the caller then re-instantiates).
void graph_begin_capture(int device, void* stream);
void* graph_end_capture(int device, void* stream);
void* graph_instantiate(int device, void* graph);
bool graph_exec_update(int device, void* exec, void* graph);
void graph_launch(int device, void* exec, void* stream);
size_t graph_node_count(void* graph);
void graph_destroy(int device, void* graph);
void graph_exec_destroy(int device, void* exec);

void device_synchronize(int device);

}  // namespace mlxn::cuda_runtime
