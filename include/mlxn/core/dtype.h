// Element types. The table below is the single definition: names, widths and categories of
// every dtype come from it, on host and device alike.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mlxn {

enum class DTypeKind : uint8_t { floating, signed_int, unsigned_int };

// X(name, bits, kind). Packed quantized formats (TurboQuant payloads, GGML blocks, MLX affine
// weights) are described by their own layout structs and stored in u8/u32 buffers; a dtype with
// bits < 8 would be added here if an element type ever needs to be addressable on its own.
#define MLXN_DTYPE_TABLE(X)           \
  X(f32, 32, DTypeKind::floating)     \
  X(f16, 16, DTypeKind::floating)     \
  X(bf16, 16, DTypeKind::floating)    \
  X(f8e4m3, 8, DTypeKind::floating)   \
  X(f8e5m2, 8, DTypeKind::floating)   \
  X(i8, 8, DTypeKind::signed_int)     \
  X(u8, 8, DTypeKind::unsigned_int)   \
  X(i32, 32, DTypeKind::signed_int)   \
  X(u32, 32, DTypeKind::unsigned_int) \
  X(i64, 64, DTypeKind::signed_int)

enum class DType : uint8_t {
#define MLXN_DTYPE_ENUM(name, bits, kind) name,
  MLXN_DTYPE_TABLE(MLXN_DTYPE_ENUM)
#undef MLXN_DTYPE_ENUM
};

inline constexpr int kDTypeCount = 0
#define MLXN_DTYPE_COUNT(name, bits, kind) +1
    MLXN_DTYPE_TABLE(MLXN_DTYPE_COUNT)
#undef MLXN_DTYPE_COUNT
    ;

constexpr int dtype_bits(DType d) {
  switch (d) {
#define MLXN_DTYPE_BITS(name, bits, kind) \
  case DType::name:                       \
    return bits;
    MLXN_DTYPE_TABLE(MLXN_DTYPE_BITS)
#undef MLXN_DTYPE_BITS
  }
  return 0;
}

constexpr DTypeKind dtype_kind(DType d) {
  switch (d) {
#define MLXN_DTYPE_KIND(name, bits, kind) \
  case DType::name:                       \
    return kind;
    MLXN_DTYPE_TABLE(MLXN_DTYPE_KIND)
#undef MLXN_DTYPE_KIND
  }
  return DTypeKind::unsigned_int;
}

// Bytes per element. Every dtype in the table is byte-addressable.
constexpr int64_t dtype_size(DType d) { return dtype_bits(d) / 8; }
constexpr bool is_floating(DType d) { return dtype_kind(d) == DTypeKind::floating; }

std::string_view dtype_name(DType d);
// Inverse of dtype_name; throws Error("[dtype] ...") listing the valid names.
DType parse_dtype(std::string_view name);

}  // namespace mlxn
