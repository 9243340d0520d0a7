#include "mlxn/core/device.h"

#include <map>
#include <mutex>
#include <thread>

#include "backend/cuda/runtime.h"
#include "mlxn/core/error.h"

namespace mlxn {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

bool cuda_built() { return cuda_runtime::built_with_cuda(); }

namespace {
struct CudaAvailability {
  int count = 0;
  std::string reason;
};

const CudaAvailability& cuda_availability() {
  static const CudaAvailability availability = [] {
    CudaAvailability a;
    a.count = cuda_runtime::device_count(&a.reason);
    return a;
  }();
  return availability;
}
}  // namespace

int cuda_device_count() { return cuda_availability().count; }
std::string cuda_unavailable_reason() { return cuda_availability().reason; }

std::vector<Device> devices() {
  std::vector<Device> list{Device::cpu()};
  for (int i = 0; i < cuda_device_count(); ++i) list.push_back(Device::cuda(i));
  return list;
}

void require_device(Device device, const char* op) {
  if (device.is_cpu()) return;
  if (device.index < 0 || device.index >= cuda_device_count()) {
    std::string why = cuda_device_count() == 0
                          ? "no CUDA device is usable (" + cuda_unavailable_reason() + ")"
                          : std::to_string(cuda_device_count()) + " CUDA device(s) present";
    throw Error(op, "device " + device.str() + " does not exist: " + why);
  }
}

const DeviceProperties& device_properties(Device device) {
  static std::mutex mutex;
  static std::map<int, DeviceProperties> cache;  // key: -1 for the CPU, else the CUDA index
  require_device(device, "device");
  std::lock_guard lock(mutex);
  const int key = device.is_cpu() ? -1 : device.index;
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  DeviceProperties p;
  if (device.is_cpu()) {
    p.device = device;
    p.name = "host CPU";
    p.multiprocessors = static_cast<int>(std::thread::hardware_concurrency());
  } else {
    p = cuda_runtime::properties(device.index);
  }
  return cache.emplace(key, std::move(p)).first->second;
}

}  // namespace mlxn
