// GGML tensor types as GGUF files number them (ggml.h's `enum ggml_type`, mirrored by gguf-py's
// GGMLQuantizationType and GGML_QUANT_SIZES): id, name and block geometry, defined once here.
// Ids that ggml removed (4, 5, 31-33, 36-38) are not types. Plain element types have blocks of
// one element. Block sizes are sizeof(block_*) of ggml-common.h, which is what ggml reads files
// with; gguf-py still lists Q8_1 as 40 bytes (two f32), an older layout than ggml's 36. Only some
// types have a WeightFormat the ops can read (src/formats/ggml.h); the rest can still be listed,
// measured and copied. Kept free of the standard library so that device code may include it.
#pragma once

#include <cstdint>

namespace mlxn {

// X(enumerator, id, name, elements per block, bytes per block)
#define MLXN_GGML_TYPE_TABLE(X)      \
  X(f32, 0, "F32", 1, 4)             \
  X(f16, 1, "F16", 1, 2)             \
  X(q4_0, 2, "Q4_0", 32, 18)         \
  X(q4_1, 3, "Q4_1", 32, 20)         \
  X(q5_0, 6, "Q5_0", 32, 22)         \
  X(q5_1, 7, "Q5_1", 32, 24)         \
  X(q8_0, 8, "Q8_0", 32, 34)         \
  X(q8_1, 9, "Q8_1", 32, 36)         \
  X(q2_k, 10, "Q2_K", 256, 84)       \
  X(q3_k, 11, "Q3_K", 256, 110)      \
  X(q4_k, 12, "Q4_K", 256, 144)      \
  X(q5_k, 13, "Q5_K", 256, 176)      \
  X(q6_k, 14, "Q6_K", 256, 210)      \
  X(q8_k, 15, "Q8_K", 256, 292)      \
  X(iq2_xxs, 16, "IQ2_XXS", 256, 66) \
  X(iq2_xs, 17, "IQ2_XS", 256, 74)   \
  X(iq3_xxs, 18, "IQ3_XXS", 256, 98) \
  X(iq1_s, 19, "IQ1_S", 256, 50)     \
  X(iq4_nl, 20, "IQ4_NL", 32, 18)    \
  X(iq3_s, 21, "IQ3_S", 256, 110)    \
  X(iq2_s, 22, "IQ2_S", 256, 82)     \
  X(iq4_xs, 23, "IQ4_XS", 256, 136)  \
  X(i8, 24, "I8", 1, 1)              \
  X(i16, 25, "I16", 1, 2)            \
  X(i32, 26, "I32", 1, 4)            \
  X(i64, 27, "I64", 1, 8)            \
  X(f64, 28, "F64", 1, 8)            \
  X(iq1_m, 29, "IQ1_M", 256, 56)     \
  X(bf16, 30, "BF16", 1, 2)          \
  X(tq1_0, 34, "TQ1_0", 256, 54)     \
  X(tq2_0, 35, "TQ2_0", 256, 66)     \
  X(mxfp4, 39, "MXFP4", 32, 17)      \
  X(nvfp4, 40, "NVFP4", 64, 36)      \
  X(q1_0, 41, "Q1_0", 128, 18)

enum class GgmlType : uint32_t {
#define MLXN_GGML_TYPE_ENUM(e, id, name, elements, bytes) e = id,
  MLXN_GGML_TYPE_TABLE(MLXN_GGML_TYPE_ENUM)
#undef MLXN_GGML_TYPE_ENUM
};

struct GgmlTypeInfo {
  GgmlType type;
  const char* name;        // as gguf-py prints it: "Q4_K"
  int32_t block_elements;  // 1 for plain element types
  int32_t block_bytes;
};

inline constexpr GgmlTypeInfo kGgmlTypes[] = {
#define MLXN_GGML_TYPE_INFO(e, id, name, elements, bytes) {GgmlType::e, name, elements, bytes},
    MLXN_GGML_TYPE_TABLE(MLXN_GGML_TYPE_INFO)
#undef MLXN_GGML_TYPE_INFO
};

// The table entry of type id `id`, or nullptr when GGUF defines no such type.
constexpr const GgmlTypeInfo* ggml_type_info(uint32_t id) {
  for (const GgmlTypeInfo& info : kGgmlTypes) {
    if (static_cast<uint32_t>(info.type) == id) return &info;
  }
  return nullptr;
}
constexpr const GgmlTypeInfo* ggml_type_info(GgmlType type) {
  return ggml_type_info(static_cast<uint32_t>(type));
}

// "Q4_K"; "?" for a value outside the table.
constexpr const char* ggml_type_name(GgmlType type) {
  const GgmlTypeInfo* info = ggml_type_info(type);
  return info != nullptr ? info->name : "?";
}

// True for the block-quantized types (more than one element per block).
constexpr bool ggml_type_is_blocked(GgmlType type) {
  const GgmlTypeInfo* info = ggml_type_info(type);
  return info != nullptr && info->block_elements > 1;
}

}  // namespace mlxn
