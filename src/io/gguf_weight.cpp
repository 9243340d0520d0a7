// GGUF tensors as Weights: the bridge from the file reader (io) to the ops layer's Weight, kept
// apart from gguf.cpp so that reading a file does not depend on the ops library.
#include "formats/ggml.h"
#include "mlxn/core/error.h"
#include "mlxn/io/gguf.h"

namespace mlxn::io {

Weight GgufFile::load_weight(const GgufTensorInfo& info, const Stream& stream) const {
  const auto fail = [&](const std::string& why) {
    return Error("gguf", path() + ": tensor " + info.name + " (" + ggml_type_name(info.type) + " " +
                             shape_str(info.dims) + "): " + why);
  };
  if (info.dims.size() != 2) {
    throw fail("a weight has 2 dims ([in, out] as stored), this tensor has " +
               std::to_string(info.dims.size()));
  }
  switch (info.type) {
    case GgmlType::f32:
    case GgmlType::f16:
    case GgmlType::bf16:
      return Weight::dense(load(info, stream));
    default:
      break;
  }
  WeightFormat format{};
  if (!formats::block_weight_format(info.type, &format)) {
    throw fail(
        "no weight format for this type (supported: F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q5_K, "
        "Q6_K)");
  }
  return Weight::ggml(format, load(info, stream), info.dims[0]);
}

Weight GgufFile::load_weight(std::string_view name, const Stream& stream) const {
  return load_weight(tensor(name), stream);
}

}  // namespace mlxn::io
