// Host side of the device error flag (src/portable/error_state.h): each device has one flag;
// kernels report into it, and Stream::synchronize() turns a report into an mlxn::Error whose
// message names the op and the buffer registered for the launch site.
#pragma once

#include <cstdint>
#include <string_view>

#include "mlxn/core/device.h"

namespace mlxn {

struct DeviceErrorState;

// Registers "what this launch is" ("[assert_finite] buffer 'k_cache.layer3'"): `op` is the op
// name, `subject` what it was working on. Identical registrations share an id.
uint32_t register_error_site(std::string_view op, std::string_view subject);

// The flag kernels on `device` write to (pinned, device-visible memory for a GPU).
DeviceErrorState* device_error_state(Device device);

// Throws the pending error of `device`, if any, and clears the flag.
void raise_pending_device_error(Device device);

}  // namespace mlxn
