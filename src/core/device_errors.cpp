#include "mlxn/core/device_errors.h"

#include <cmath>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "backend/cuda/runtime.h"
#include "mlxn/core/error.h"
#include "portable/error_state.h"

namespace mlxn {

namespace {

struct Site {
  std::string op;
  std::string subject;
};

// Sites and flags live for the whole program: kernels may still hold a flag pointer during
// static destruction.
struct Registry {
  std::mutex mutex;
  std::vector<Site> sites{{"unknown", "an unregistered launch"}};  // id 0
  std::map<std::string, uint32_t> site_ids;
  DeviceErrorState cpu_state{};
  std::map<int, DeviceErrorState*> cuda_states;
};

Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

std::string format_value(float v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return std::to_string(v);
}

}  // namespace

uint32_t register_error_site(std::string_view op, std::string_view subject) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::string key = std::string(op) + '\n' + std::string(subject);
  auto it = r.site_ids.find(key);
  if (it != r.site_ids.end()) return it->second;
  const auto id = static_cast<uint32_t>(r.sites.size());
  r.sites.push_back({std::string(op), std::string(subject)});
  r.site_ids.emplace(std::move(key), id);
  return id;
}

DeviceErrorState* device_error_state(Device device) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  if (device.is_cpu()) return &r.cpu_state;
  auto it = r.cuda_states.find(device.index);
  if (it != r.cuda_states.end()) return it->second;
  auto* state =
      static_cast<DeviceErrorState*>(cuda_runtime::malloc_host_mapped(sizeof(DeviceErrorState)));
  r.cuda_states.emplace(device.index, state);
  return state;
}

void raise_pending_device_error(Device device) {
  Registry& r = registry();
  DeviceErrorState* state = nullptr;
  {
    std::lock_guard lock(r.mutex);
    if (device.is_cpu()) {
      state = &r.cpu_state;
    } else {
      auto it = r.cuda_states.find(device.index);
      if (it == r.cuda_states.end()) return;  // no kernel on this device was given a flag
      state = it->second;
    }
  }
  volatile DeviceErrorState* flag = state;
  if (flag->code == 0) return;
  const DeviceErrorState seen{flag->code,   flag->site,  flag->index,
                              flag->detail, flag->value, flag->reports};
  *state = DeviceErrorState{};

  Site site;
  {
    std::lock_guard lock(r.mutex);
    site = seen.site < r.sites.size() ? r.sites[seen.site] : r.sites[0];
  }
  std::string what;
  switch (static_cast<DeviceErrorCode>(seen.code)) {
    case DeviceErrorCode::non_finite:
      what = "non-finite value " + format_value(seen.value) + " at index " +
             std::to_string(seen.index) + " of " + site.subject;
      break;
    case DeviceErrorCode::index_out_of_range:
      what = "index " + std::to_string(seen.detail) + " out of range at position " +
             std::to_string(seen.index) + " of " + site.subject;
      break;
    default:
      what = "unknown device error code " + std::to_string(seen.code) + " in " + site.subject;
  }
  what += " on " + device.str();
  if (seen.reports > 1) what += " (" + std::to_string(seen.reports) + " reports, first shown)";
  throw Error(site.op, what);
}

}  // namespace mlxn
