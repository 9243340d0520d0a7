#include "mlxn/model/weights.h"

#include <functional>
#include <optional>
#include <sstream>
#include <string_view>
#include <utility>

#include "formats/ggml.h"
#include "io/progress.h"
#include "mlxn/core/error.h"
#include "mlxn/io/gguf.h"
#include "mlxn/io/hf_config.h"
#include "mlxn/io/safetensors.h"
#include "mlxn/model/tensor_names.h"
#include "model/config_check.h"

namespace mlxn::model {

namespace {

using detail::cat;

// Matrices become Weights, everything else (norms, biases) 1-D Buffers.
struct RoleShape {
  bool matrix = false;
  Shape shape;  // [out, in] for a matrix, [n] for a vector
};

RoleShape role_shape(const ModelConfig& c, TensorRole role) {
  const int64_t q_width = c.num_heads * c.head_dim;
  const int64_t kv_width = c.num_kv_heads * c.head_dim;
  const int64_t hidden = c.hidden_size;
  const int64_t inter = c.intermediate_size;
  switch (role) {
    case TensorRole::embed:
    case TensorRole::lm_head:
      return {true, {c.vocab_size, hidden}};
    case TensorRole::attn_q:
      return {true, {q_width, hidden}};
    case TensorRole::attn_k:
    case TensorRole::attn_v:
      return {true, {kv_width, hidden}};
    case TensorRole::attn_o:
      return {true, {hidden, q_width}};
    case TensorRole::ffn_gate:
    case TensorRole::ffn_up:
      return {true, {inter, hidden}};
    case TensorRole::ffn_down:
      return {true, {hidden, inter}};
    case TensorRole::attn_q_bias:
      return {false, {q_width}};
    case TensorRole::attn_k_bias:
    case TensorRole::attn_v_bias:
      return {false, {kv_width}};
    case TensorRole::ffn_gate_bias:
    case TensorRole::ffn_up_bias:
      return {false, {inter}};
    case TensorRole::q_norm:
    case TensorRole::k_norm:
      return {false, {c.head_dim}};
    case TensorRole::final_norm:
    case TensorRole::input_norm:
    case TensorRole::post_attn_norm:
    case TensorRole::pre_ffn_norm:
    case TensorRole::post_ffn_norm:
    case TensorRole::attn_o_bias:
    case TensorRole::ffn_down_bias:
      return {false, {hidden}};
  }
  throw Error(detail::kOp, cat("no shape for tensor role ", static_cast<int>(role)));
}

Weight* weight_slot(ModelWeights& m, TensorRole role, int64_t layer) {
  const Weight* w = std::as_const(m).weight(role, layer);
  if (w == nullptr) throw Error(detail::kOp, cat(tensor_role_name(role), " is not a matrix"));
  return const_cast<Weight*>(w);
}

Buffer* buffer_slot(ModelWeights& m, TensorRole role, int64_t layer) {
  const Buffer* b = std::as_const(m).buffer(role, layer);
  if (b == nullptr) throw Error(detail::kOp, cat(tensor_role_name(role), " is not a 1-D tensor"));
  return const_cast<Buffer*>(b);
}

// "attn_q of layer 3", "embed".
std::string role_text(TensorRole role, int64_t layer) {
  if (layer < 0) return tensor_role_name(role);
  return cat(tensor_role_name(role), " of layer ", layer);
}

bool is_float(DType dtype) {
  return dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::f16;
}

// One tensor (or, for an MLX-quantized matrix, three) to copy, found and checked before any copy
// starts so that a bad checkpoint fails before device memory is spent on it.
struct Planned {
  TensorRole role;
  int64_t layer;
  bool matrix;
  std::vector<std::string> names;  // weight, then scales and biases when quantized
  std::optional<io::QuantSpec> spec;
  int64_t nbytes = 0;
};

// Visits every role the config gives the model: the global ones, then each layer's.
void for_each_role(const ModelConfig& c, const std::function<void(TensorRole, int64_t)>& fn) {
  for (TensorRole role : global_tensor_roles(c)) fn(role, -1);
  const std::vector<TensorRole> per_layer = layer_tensor_roles(c);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    for (TensorRole role : per_layer) fn(role, i);
  }
}

ModelWeights empty_model(const ModelConfig& c) {
  ModelWeights m;
  m.layers.resize(static_cast<size_t>(c.num_layers));
  return m;
}

void tie_head(const ModelConfig& c, ModelWeights& m) {
  if (c.tie_word_embeddings) m.lm_head = m.embed;
}

// ---- Hugging Face / MLX safetensors ------------------------------------------------------------

class HfPlanner {
 public:
  HfPlanner(const ModelConfig& c, const io::SafetensorsModel& st,
            const std::optional<io::QuantizationConfig>& quant)
      : c_(c), st_(st), quant_(quant) {}

  Planned plan(TensorRole role, int64_t layer) const {
    const RoleShape rs = role_shape(c_, role);
    const std::string name = hf_tensor_name(c_, role, layer);
    const std::string what = role_text(role, layer);
    const io::TensorInfo& info = find(name, what);
    Planned p{role, layer, rs.matrix, {name}, std::nullopt, info.nbytes};
    if (!rs.matrix) {
      check_float(info, what);
      check_shape(info, what, rs.shape);
      return p;
    }
    const std::string_view suffix = ".weight";
    const std::string module =
        name.ends_with(suffix) ? name.substr(0, name.size() - suffix.size()) : name;
    std::optional<io::QuantSpec> spec = quant_ ? quant_->for_module(module) : std::nullopt;
    // MLX leaves a layer unquantized when its input width is not a multiple of the group.
    if (spec && rs.shape[1] % spec->group_size != 0) spec.reset();
    if (!spec) {
      if (info.dtype == DType::u32) {
        throw fail(info.file, cat(name, " (", what, ") holds U32 codes, but config.json has no ",
                                  "quantization for module ", module));
      }
      check_float(info, what);
      check_shape(info, what, rs.shape);
      return p;
    }
    const int64_t n = rs.shape[0], k = rs.shape[1];
    const std::string quant_text =
        cat("quantized ", spec->bits, "-bit group ", spec->group_size, " by config.json");
    if (info.dtype != DType::u32) {
      throw fail(info.file, cat(name, " (", what, ", ", quant_text, ") has dtype ", info.dtype_name,
                                ", expected U32"));
    }
    check_shape(info, what, {n, k * spec->bits / 32});
    const Shape group_shape{n, k / spec->group_size};
    const io::TensorInfo* parts[2] = {nullptr, nullptr};
    const char* part_names[2] = {".scales", ".biases"};
    for (int i = 0; i < 2; ++i) {
      const std::string part = cat(module, part_names[i]);
      parts[i] = st_.find(part);
      if (parts[i] == nullptr) {
        throw fail(st_.dir(),
                   cat("no tensor ", part, " for ", name, " (", what, ", ", quant_text, ")"));
      }
      check_float(*parts[i], what);
      check_shape(*parts[i], what, group_shape);
      p.names.push_back(part);
      p.nbytes += parts[i]->nbytes;
    }
    if (parts[0]->dtype != parts[1]->dtype) {
      throw fail(parts[1]->file, cat(parts[1]->name, " (", what, ") has dtype ",
                                     parts[1]->dtype_name, ", its scales ", parts[0]->dtype_name));
    }
    p.spec = spec;
    return p;
  }

 private:
  static Error fail(const std::string& file, const std::string& why) {
    return Error(detail::kOp, cat(file, ": ", why));
  }

  const io::TensorInfo& find(const std::string& name, const std::string& what) const {
    const io::TensorInfo* info = st_.find(name);
    if (info == nullptr) throw fail(st_.dir(), cat("no tensor ", name, " (", what, ")"));
    return *info;
  }

  static void check_float(const io::TensorInfo& info, const std::string& what) {
    if (!info.dtype || !is_float(*info.dtype)) {
      throw fail(info.file, cat(info.name, " (", what, ") has dtype ", info.dtype_name,
                                ", expected F32, BF16 or F16"));
    }
  }

  static void check_shape(const io::TensorInfo& info, const std::string& what,
                          const Shape& expected) {
    if (info.shape != expected) {
      throw fail(info.file, cat(info.name, " (", what, ") has shape ", shape_str(info.shape),
                                ", expected ", shape_str(expected)));
    }
  }

  const ModelConfig& c_;
  const io::SafetensorsModel& st_;
  const std::optional<io::QuantizationConfig>& quant_;
};

// ---- GGUF --------------------------------------------------------------------------------------

void check_gguf(const ModelConfig& c, const io::GgufFile& file, TensorRole role, int64_t layer,
                int64_t* nbytes) {
  const RoleShape rs = role_shape(c, role);
  const std::string name = gguf_tensor_name(c, role, layer);
  const std::string what = role_text(role, layer);
  const auto fail = [&](const std::string& why) {
    return Error(detail::kOp, cat(file.path(), ": ", why));
  };
  const io::GgufTensorInfo* info = file.find_tensor(name);
  if (info == nullptr) throw fail(cat("no tensor ", name, " (", what, ")"));
  // GGUF lists dims innermost first: a matrix [out, in] is stored as dims [in, out].
  if (info->shape() != rs.shape) {
    throw fail(cat(name, " (", what, ") has shape ", shape_str(info->shape()), ", expected ",
                   shape_str(rs.shape)));
  }
  const bool float_type =
      info->type == GgmlType::f32 || info->type == GgmlType::f16 || info->type == GgmlType::bf16;
  WeightFormat format{};
  if (!float_type && !(rs.matrix && formats::block_weight_format(info->type, &format))) {
    throw fail(cat(name, " (", what, ") has type ", ggml_type_name(info->type),
                   rs.matrix ? ", expected F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q5_K or Q6_K"
                             : ", expected F32, F16 or BF16"));
  }
  *nbytes += info->nbytes;
}

}  // namespace

ModelWeights load_hf_weights(const ModelConfig& config, const io::HfConfig& hf,
                             const std::string& model_dir, const Stream& stream) {
  const io::SafetensorsModel st = io::SafetensorsModel::open_dir(model_dir);
  const std::optional<io::QuantizationConfig> quant = hf.quantization();
  const HfPlanner planner(config, st, quant);

  std::vector<Planned> plan;
  int64_t total = 0;
  for_each_role(config, [&](TensorRole role, int64_t layer) {
    plan.push_back(planner.plan(role, layer));
    total += plan.back().nbytes;
  });

  ModelWeights m = empty_model(config);
  io::Progress progress("load", total);
  const auto load = [&](const std::string& name) {
    progress.set_detail(name);
    int64_t reported = 0;
    return st.load(name, stream, [&](int64_t done, int64_t) {
      progress.advance(done - reported);
      reported = done;
    });
  };
  for (const Planned& p : plan) {
    if (!p.matrix) {
      *buffer_slot(m, p.role, p.layer) = load(p.names[0]);
    } else if (!p.spec) {
      *weight_slot(m, p.role, p.layer) = Weight::dense(load(p.names[0]));
    } else {
      Buffer packed = load(p.names[0]);
      Buffer scales = load(p.names[1]);
      Buffer biases = load(p.names[2]);
      *weight_slot(m, p.role, p.layer) =
          Weight::mlx_affine(std::move(packed), std::move(scales), std::move(biases), p.spec->bits,
                             p.spec->group_size);
    }
  }
  progress.finish();
  tie_head(config, m);
  return m;
}

ModelWeights load_gguf_weights(const ModelConfig& config, const io::GgufFile& file,
                               const Stream& stream) {
  int64_t total = 0;
  for_each_role(config, [&](TensorRole role, int64_t layer) {
    check_gguf(config, file, role, layer, &total);
  });

  ModelWeights m = empty_model(config);
  io::Progress progress("load", total);
  for_each_role(config, [&](TensorRole role, int64_t layer) {
    const std::string name = gguf_tensor_name(config, role, layer);
    const io::GgufTensorInfo& info = file.tensor(name);
    progress.set_detail(name);
    if (role_shape(config, role).matrix) {
      *weight_slot(m, role, layer) = file.load_weight(info, stream);
    } else {
      *buffer_slot(m, role, layer) = file.load(info, stream);
    }
    progress.advance(info.nbytes);
  });
  progress.finish();
  tie_head(config, m);
  return m;
}

namespace {

// The layer a per-layer role names, checked.
const LayerWeights& layer_of(const std::vector<LayerWeights>& layers, TensorRole role,
                             int64_t layer) {
  if (layer < 0 || layer >= static_cast<int64_t>(layers.size())) {
    throw Error(detail::kOp, cat(tensor_role_name(role), ": layer ", layer, " is not one of the ",
                                 layers.size(), " layers"));
  }
  return layers[static_cast<size_t>(layer)];
}

}  // namespace

const Weight* ModelWeights::weight(TensorRole role, int64_t layer) const {
  switch (role) {
    case TensorRole::embed:
      return &embed;
    case TensorRole::lm_head:
      return &lm_head;
    case TensorRole::final_norm:
      return nullptr;
    default:
      break;
  }
  const LayerWeights& l = layer_of(layers, role, layer);
  switch (role) {
    case TensorRole::attn_q:
      return &l.q;
    case TensorRole::attn_k:
      return &l.k;
    case TensorRole::attn_v:
      return &l.v;
    case TensorRole::attn_o:
      return &l.o;
    case TensorRole::ffn_gate:
      return &l.gate;
    case TensorRole::ffn_up:
      return &l.up;
    case TensorRole::ffn_down:
      return &l.down;
    default:
      return nullptr;
  }
}

const Buffer* ModelWeights::buffer(TensorRole role, int64_t layer) const {
  if (role == TensorRole::final_norm) return &final_norm;
  if (role == TensorRole::embed || role == TensorRole::lm_head) return nullptr;
  const LayerWeights& l = layer_of(layers, role, layer);
  switch (role) {
    case TensorRole::attn_q_bias:
      return &l.q_bias;
    case TensorRole::attn_k_bias:
      return &l.k_bias;
    case TensorRole::attn_v_bias:
      return &l.v_bias;
    case TensorRole::attn_o_bias:
      return &l.o_bias;
    case TensorRole::ffn_gate_bias:
      return &l.gate_bias;
    case TensorRole::ffn_up_bias:
      return &l.up_bias;
    case TensorRole::ffn_down_bias:
      return &l.down_bias;
    case TensorRole::input_norm:
      return &l.input_norm;
    case TensorRole::post_attn_norm:
      return &l.post_attn_norm;
    case TensorRole::pre_ffn_norm:
      return &l.pre_ffn_norm;
    case TensorRole::post_ffn_norm:
      return &l.post_ffn_norm;
    case TensorRole::q_norm:
      return &l.q_norm;
    case TensorRole::k_norm:
      return &l.k_norm;
    default:
      return nullptr;
  }
}

int64_t ModelWeights::bytes() const {
  int64_t total = embed.defined() ? embed.nbytes() : 0;
  if (final_norm.defined()) total += final_norm.nbytes();
  if (lm_head.defined() && !(embed.defined() && lm_head.data().data() == embed.data().data())) {
    total += lm_head.nbytes();
  }
  for (const LayerWeights& l : layers) {
    for (const Weight* w : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) {
      if (w->defined()) total += w->nbytes();
    }
    for (const Buffer* b : {&l.q_bias, &l.k_bias, &l.v_bias, &l.o_bias, &l.gate_bias, &l.up_bias,
                            &l.down_bias, &l.input_norm, &l.post_attn_norm, &l.pre_ffn_norm,
                            &l.post_ffn_norm, &l.q_norm, &l.k_norm}) {
      if (b->defined()) total += b->nbytes();
    }
  }
  return total;
}

std::string ModelWeights::describe() const {
  std::ostringstream out;
  const auto weight = [&](const char* role, const Weight& w) {
    if (w.defined()) out << role << ": " << w.describe() << "\n";
  };
  const auto buffer = [&](const char* role, const Buffer& b) {
    if (b.defined()) out << role << ": " << b.describe() << "\n";
  };
  weight("embed", embed);
  buffer("final_norm", final_norm);
  const bool tied =
      lm_head.defined() && embed.defined() && lm_head.data().data() == embed.data().data();
  if (tied) {
    out << "lm_head: tied to embed\n";
  } else {
    weight("lm_head", lm_head);
  }
  if (!layers.empty()) {
    const LayerWeights& l = layers.front();
    out << "layers: " << layers.size() << ", each as layer 0:\n";
    weight("  attn_q", l.q);
    weight("  attn_k", l.k);
    weight("  attn_v", l.v);
    weight("  attn_o", l.o);
    buffer("  attn_q_bias", l.q_bias);
    buffer("  attn_k_bias", l.k_bias);
    buffer("  attn_v_bias", l.v_bias);
    buffer("  attn_o_bias", l.o_bias);
    buffer("  input_norm", l.input_norm);
    buffer("  q_norm", l.q_norm);
    buffer("  k_norm", l.k_norm);
    buffer("  post_attn_norm", l.post_attn_norm);
    buffer("  pre_ffn_norm", l.pre_ffn_norm);
    buffer("  post_ffn_norm", l.post_ffn_norm);
    weight("  ffn_gate", l.gate);
    weight("  ffn_up", l.up);
    weight("  ffn_down", l.down);
    buffer("  ffn_gate_bias", l.gate_bias);
    buffer("  ffn_up_bias", l.up_bias);
    buffer("  ffn_down_bias", l.down_bias);
  }
  out << "total: " << io::format_bytes(static_cast<double>(bytes()));
  return out.str();
}

}  // namespace mlxn::model
