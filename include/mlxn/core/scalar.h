// ScalarArg: a scalar operand given either as a value fixed when the op is launched, or as a
// one-element f32 buffer that the op reads when it runs. The second form lets a captured Graph
// see a new value on every replay without capturing again.
#pragma once

#include "mlxn/core/buffer.h"

namespace mlxn {

class ScalarArg {
 public:
  ScalarArg(double value) : value_(value) {}  // NOLINT: implicit on purpose, `scale(x, 0.5, ..)`
  // `value` must hold exactly one f32 element on the op's device.
  static ScalarArg from_buffer(Buffer value) {
    ScalarArg s(0.0);
    s.buffer_ = std::move(value);
    return s;
  }

  bool is_indirect() const { return buffer_.defined(); }
  double value() const { return value_; }
  const Buffer& buffer() const { return buffer_; }

 private:
  double value_ = 0.0;
  Buffer buffer_;
};

}  // namespace mlxn
