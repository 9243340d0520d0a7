// Everything public in one include.
#pragma once

#include "mlxn/core/buffer.h"
#include "mlxn/core/device.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "mlxn/core/dtype.h"
#include "mlxn/core/error.h"
#include "mlxn/core/float_types.h"
#include "mlxn/core/graph.h"
#include "mlxn/core/pool.h"
#include "mlxn/core/scalar.h"
#include "mlxn/core/stream.h"
#include "mlxn/ops/checks.h"
#include "mlxn/ops/elementwise.h"
#include "mlxn/ops/kv_cache.h"
#include "mlxn/ops/memory.h"
#include "mlxn/ops/turboquant.h"
