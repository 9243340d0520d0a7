// Internal: which binary operation the elementwise backends run.
#pragma once

namespace mlxn {
enum class BinaryOp { add, mul };
}
