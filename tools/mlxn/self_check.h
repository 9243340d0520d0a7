// `mlxn self-check`: runs the core ops on every device and compares each GPU result with the CPU
// reference bit for bit.
#pragma once

#include <string>
#include <vector>

#include "mlxn/core/device.h"

namespace mlxn::cli {

struct CheckResult {
  Device device;
  std::string name;
  bool passed = false;
  std::string detail;
};

std::vector<CheckResult> run_self_check(const std::vector<Device>& devices);

}  // namespace mlxn::cli
