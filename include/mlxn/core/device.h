// Devices: the CPU (reference backend) and each CUDA GPU, with the properties kernels size
// themselves by.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlxn {

enum class DeviceKind : uint8_t { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;

  static constexpr Device cpu() { return {DeviceKind::cpu, 0}; }
  static constexpr Device cuda(int index = 0) { return {DeviceKind::cuda, index}; }
  constexpr bool is_cpu() const { return kind == DeviceKind::cpu; }
  constexpr bool is_cuda() const { return kind == DeviceKind::cuda; }
  constexpr bool operator==(const Device&) const = default;
  std::string str() const;  // "cpu", "cuda:0"
};

struct DeviceProperties {
  Device device;
  std::string name;
  int compute_major = 0;  // compute capability; 0 for the CPU
  int compute_minor = 0;
  int multiprocessors = 0;                    // SMs on a GPU, hardware threads on the CPU
  int64_t shared_memory_per_block_optin = 0;  // bytes a block may use after opting in
  int64_t shared_memory_per_multiprocessor = 0;
  int64_t l2_cache_bytes = 0;
  int64_t total_memory_bytes = 0;
  int max_threads_per_multiprocessor = 0;
  int clock_khz = 0;
  int memory_bus_bits = 0;
};

// True when the library was compiled with its CUDA backend.
bool cuda_built();
// Usable CUDA devices: 0 without the CUDA backend, a driver or a GPU.
int cuda_device_count();
// Why cuda_device_count() is 0 ("" when it is not).
std::string cuda_unavailable_reason();
// The CPU followed by every usable CUDA device.
std::vector<Device> devices();
// Cached after the first query. Throws Error("[device] ...") for a device that does not exist.
const DeviceProperties& device_properties(Device device);
// Throws unless `device` exists and is usable.
void require_device(Device device, const char* op);

}  // namespace mlxn
