#include "mlxn/ops/kv_cache.h"

#include <algorithm>
#include <array>
#include <map>
#include <numeric>
#include <string>

#include "attention/decode_job.h"
#include "backend/cpu/kv_cache.h"
#include "mlxn/core/device_errors.h"
#include "mlxn/core/dispatch.h"
#include "mlxn/ops/memory.h"
#include "ops/backend.h"
#include "turboquant/codebook.h"
#if MLXN_WITH_CUDA
#include "backend/cuda/attention/kv_cache.h"
#endif

namespace mlxn {

namespace {

std::string str(int64_t v) { return std::to_string(v); }

struct TypeInfo {
  KvType type;
  std::string_view name;
  int bits;
};
// The cache types, defined once.
constexpr std::array<TypeInfo, 10> kTypes = {{{KvType::bf16, "bf16", 16},
                                              {KvType::f16, "f16", 16},
                                              {KvType::f32, "f32", 32},
                                              {KvType::fp8, "fp8", 8},
                                              {KvType::tq2, "tq2", 2},
                                              {KvType::tq3, "tq3", 3},
                                              {KvType::tq4, "tq4", 4},
                                              {KvType::tq5, "tq5", 5},
                                              {KvType::tq6, "tq6", 6},
                                              {KvType::tq8, "tq8", 8}}};

const TypeInfo& info(KvType type) {
  for (const auto& t : kTypes)
    if (t.type == type) return t;
  throw Error("kv_cache", "unknown cache type " + str(static_cast<int>(type)));
}

DType dense_dtype(KvType type) {
  switch (type) {
    case KvType::bf16:
      return DType::bf16;
    case KvType::f16:
      return DType::f16;
    case KvType::f32:
      return DType::f32;
    case KvType::fp8:
      return DType::f8e4m3;
    default:
      return DType::u8;
  }
}

// Pages in each sequence's ring of a sliding-window layer: the window and a step's new tokens.
int ring_pages_of(int window, const KvCacheConfig& c) {
  return static_cast<int>((window + c.max_query_tokens - 1 + c.page_size - 1) / c.page_size);
}

// Pages of a window's group: a ring per sequence, and one extra page that takes the writes of
// tokens a long append pushes out of the ring before they land (they would race for the same
// slots otherwise); nothing reads it.
int64_t ring_group_pages(int ring_pages, const KvCacheConfig& c) {
  return int64_t{c.max_sequences} * ring_pages + 1;
}

void require_f32_on_cpu(KvType type, const Device& device, const char* op) {
  if (type == KvType::f32 && !device.is_cpu()) {
    throw Error(op, "an f32 cache lives on the CPU only (the reference type); on " + device.str() +
                        " use bf16, f16, fp8 or tq2..tq8");
  }
}

void require_i32(const Buffer& b, int rank, const char* op, const char* name) {
  b.require_dtype(DType::i32, op, name);
  if (b.rank() != rank) {
    throw Error(op, std::string(name) + " must have rank " + str(rank) + ", got " + b.describe());
  }
  b.require_contiguous(op, name);
}

}  // namespace

std::string_view kv_type_name(KvType type) { return info(type).name; }

KvType parse_kv_type(std::string_view name) {
  std::string valid;
  for (const auto& t : kTypes) {
    if (t.name == name) return t.type;
    valid += (valid.empty() ? "" : ", ") + std::string(t.name);
  }
  throw Error("kv_cache", "unknown cache type '" + std::string(name) + "' (valid: " + valid + ")");
}

int kv_type_bits(KvType type) { return info(type).bits; }
bool kv_type_is_tq(KvType type) { return type >= KvType::tq2; }

int64_t kv_vector_bytes(KvType type, int dim) {
  const int64_t payload = int64_t{dim} * kv_type_bits(type) / 8;
  return kv_type_is_tq(type) ? payload + 2 : payload;
}

// ---- KvStore --------------------------------------------------------------------------------

KvStore KvStore::allocate(KvType type, int64_t num_pages, int kv_heads, int page_size, int dim,
                          const Stream& stream) {
  const char* op = "kv_cache";
  tq::require_dim(dim, op);
  ops_detail::require_page_size(page_size, op);
  if (num_pages <= 0 || kv_heads <= 0) {
    throw Error(
        op, "num_pages " + str(num_pages) + " and kv_heads " + str(kv_heads) + " must be positive");
  }
  require_f32_on_cpu(type, stream.device(), op);
  KvStore s;
  s.type = type;
  s.dim = dim;
  if (kv_type_is_tq(type)) {
    TqCache c = TqCache::allocate(num_pages, kv_heads, page_size, dim, kv_type_bits(type), stream);
    s.data = c.payload;
    s.scales = c.scales;
    return s;
  }
  s.data = Buffer::empty_exact({num_pages, kv_heads, page_size, dim}, dense_dtype(type), stream);
  fill(s.data, 0.0, stream);
  if (type == KvType::fp8) {
    s.scales = Buffer::empty_exact({kv_heads}, DType::f32, stream);
    fill(s.scales, 1.0, stream);
  }
  return s;
}

int64_t KvStore::bytes() const { return data.nbytes() + (scales.defined() ? scales.nbytes() : 0); }

void KvStore::validate(const char* op) const {
  if (!data.defined()) throw Error(op, "cache store is undefined");
  if (kv_type_is_tq(type)) {
    as_tq().validate(op);
    return;
  }
  tq::require_dim(dim, op);
  require_f32_on_cpu(type, data.device(), op);
  data.require_dtype(dense_dtype(type), op, "cache data");
  if (data.rank() != 4 || data.dim(3) != dim) {
    throw Error(op, std::string(kv_type_name(type)) +
                        " cache data must be [pages, kv_heads, "
                        "page_size, " +
                        str(dim) + "], got " + data.describe());
  }
  data.require_contiguous(op, "cache data");
  ops_detail::require_page_size(data.dim(2), op);
  if (type == KvType::fp8) {
    if (!scales.defined() || scales.dtype() != DType::f32 || scales.shape() != Shape{data.dim(1)}) {
      throw Error(op, "fp8 cache scales must be f32 [kv_heads]");
    }
    scales.require_contiguous(op, "cache scales");
  }
}

TqCache KvStore::as_tq() const {
  if (!kv_type_is_tq(type)) {
    throw Error("kv_cache", std::string(kv_type_name(type)) + " store is not a TurboQuant store");
  }
  TqCache c;
  c.bits = kv_type_bits(type);
  c.dim = dim;
  c.payload = data;
  c.scales = scales;
  return c;
}

void KvLayerStorage::validate(const char* op) const {
  k.validate(op);
  v.validate(op);
  if (kv_type_is_tq(k.type) != kv_type_is_tq(v.type) ||
      (!kv_type_is_tq(k.type) && k.type != v.type)) {
    throw Error(op, "K " + std::string(kv_type_name(k.type)) + " with V " +
                        std::string(kv_type_name(v.type)) +
                        ": K and V must be of one dense type, or both TurboQuant (any bit widths)");
  }
  if (k.dim != v.dim || k.num_pages() != v.num_pages() || k.kv_heads() != v.kv_heads() ||
      k.page_size() != v.page_size()) {
    throw Error(op, "K and V stores differ in head_dim, pages, kv_heads or page size");
  }
  if (window < 0 || ring_pages < 0 || (ring_pages > 0 && window == 0)) {
    throw Error(op, "window " + str(window) + " / ring_pages " + str(ring_pages) +
                        ": a ring needs a sliding window");
  }
  if (!page_ids.defined() || page_ids.dtype() != DType::i32 ||
      page_ids.shape() != Shape{k.num_pages()}) {
    throw Error(op, "page_ids must be i32 [num_pages]");
  }
}

// ---- kv_append ------------------------------------------------------------------------------

void kv_append(const Buffer& k, const Buffer& v, const Buffer& slots, const KvLayerStorage& layer,
               const Stream& stream, Fp8Calibration calibrate_fp8, std::string_view label) {
  const char* op = "kv_append";
  layer.validate(op);
  require_i32(slots, 1, op, "slots");
  ops_detail::prepare(op, stream,
                      {{"k", &k},
                       {"v", &v},
                       {"slots", &slots},
                       {"K data", &layer.k.data},
                       {"V data", &layer.v.data},
                       {"page_ids", &layer.page_ids}});
  for (const Buffer* x : {&k, &v}) {
    dispatch_dtype<tq::InputDTypes>(
        op, x->dtype(), [](auto) {}, "input dtype");
    if (x->rank() != 3 || x->dim(0) != slots.numel() || x->dim(1) != layer.k.kv_heads() ||
        x->dim(2) != layer.k.dim) {
      throw Error(op, "k and v must be [" + str(slots.numel()) + ", " + str(layer.k.kv_heads()) +
                          ", " + str(layer.k.dim) + "] (tokens, kv_heads, head_dim), got " +
                          x->describe());
    }
  }
  const int64_t slot_count = layer.k.num_pages() * layer.k.page_size();
  if (slot_count > INT32_MAX) throw Error(op, "more than 2^31 slots in one store");
  if (slots.numel() == 0) return;
  const std::string name(label);
  const KvStore* stores[2] = {&layer.k, &layer.v};
  const Buffer* xs[2] = {&k, &v};
  // TurboQuant stores: the encoder with a page table naming every page turns slots into pages.
  if (kv_type_is_tq(layer.k.type) && kv_type_is_tq(layer.v.type)) {
    tq_encode_kv(k, v, slots, layer.page_ids, layer.k.as_tq(), layer.v.as_tq(), stream, label);
    return;
  }
  const uint32_t index_site = register_error_site(op, "slots of " + name);
  for (int i = 0; i < 2; ++i) {
    const KvStore& s = *stores[i];
    const char* which = i == 0 ? " K" : " V";
    if (kv_type_is_tq(s.type)) {
      tq_encode(*xs[i], slots, layer.page_ids, s.as_tq(), stream, name + which);
      continue;
    }
    if (s.type == KvType::fp8) ops_detail::prepare(op, stream, {{"fp8 scales", &s.scales}});
    if (!xs[i]->is_contiguous()) {
      throw Error(op, "k and v must be contiguous for " + std::string(kv_type_name(s.type)) +
                          " stores, got " + xs[i]->describe());
    }
    const uint32_t value_site = register_error_site(op, name + which);
    const bool calibrate = (i == 0 ? calibrate_fp8.k : calibrate_fp8.v) && s.type == KvType::fp8;
    if (stream.device().is_cpu()) {
      cpu::kv_write(*xs[i], slots, s, calibrate, value_site, index_site, stream);
    } else {
      MLXN_CUDA_BACKEND(
          cuda::kv_write(*xs[i], slots, s, calibrate, value_site, index_site, stream));
    }
  }
}

// ---- decode_attention -----------------------------------------------------------------------

void decode_attention(const Buffer& q, const KvLayerStorage& layer, const Buffer& page_table,
                      const Buffer& lengths, const Buffer& out, const DecodeAttentionParams& params,
                      const Stream& stream) {
  const char* op = "decode_attention";
  layer.validate(op);
  require_i32(page_table, 2, op, "page_table");
  require_i32(lengths, 1, op, "lengths");
  ops_detail::prepare(op, stream,
                      {{"q", &q},
                       {"out", &out},
                       {"page_table", &page_table},
                       {"lengths", &lengths},
                       {"K data", &layer.k.data},
                       {"V data", &layer.v.data}});
  for (const Buffer* s : {&layer.k.scales, &layer.v.scales})
    if (s->defined()) ops_detail::prepare(op, stream, {{"cache scales", s}});
  dispatch_dtype<tq::InputDTypes>(
      op, q.dtype(), [](auto) {}, "q dtype");
  dispatch_dtype<DTypeList<DType::bf16, DType::f32>>(
      op, out.dtype(), [](auto) {}, "output dtype");
  const int dim = layer.k.dim;
  const int kv_heads = layer.k.kv_heads();
  if (q.rank() != 4 || q.dim(3) != dim || q.dim(2) % kv_heads != 0 || q.dim(2) == 0) {
    throw Error(op, "q must be [batch, q_len, q_heads, " + str(dim) +
                        "] with q_heads a multiple "
                        "of the cache's " +
                        str(kv_heads) + " kv_heads, got " + q.describe());
  }
  q.require_contiguous(op, "q");
  out.require_contiguous(op, "out");
  ops_detail::require_same_shape(op, q, "q", out, "out");
  const int64_t batch = q.dim(0), q_len = q.dim(1);
  if (batch == 0) return;
  if (q.numel() >= INT32_MAX) throw Error(op, "q has 2^31 or more elements");
  if (q_len < 1 || q_len > 8) throw Error(op, "q_len " + str(q_len) + " must be 1..8");
  if (lengths.numel() != batch || page_table.dim(0) != batch) {
    throw Error(op, "lengths " + lengths.describe() + " and page_table " + page_table.describe() +
                        " must have one row per sequence (" + str(batch) + ")");
  }
  if (page_table.dim(1) == 0) throw Error(op, "page_table has no columns");
  if (!(params.scale > 0.0f) || !(params.softcap >= 0.0f) || params.window < 0) {
    throw Error(op, "scale must be > 0, softcap >= 0 and window >= 0");
  }
  if (layer.ring_pages > 0) {
    if (page_table.dim(1) < layer.ring_pages) {
      throw Error(op, "page_table has " + str(page_table.dim(1)) + " columns, the ring " +
                          str(layer.ring_pages));
    }
    const int64_t ring_slots = int64_t{layer.ring_pages} * layer.k.page_size();
    if (params.window == 0 || params.window + q_len - 1 > ring_slots) {
      throw Error(op, "a ring of " + str(ring_slots) +
                          " slots needs window > 0 and window + q_len "
                          "- 1 <= its slots (window " +
                          str(params.window) + ", q_len " + str(q_len) + ")");
    }
  }
  if (params.sinks.defined()) {
    ops_detail::prepare(op, stream, {{"sinks", &params.sinks}});
    params.sinks.require_dtype(DType::f32, op, "sinks");
    params.sinks.require_contiguous(op, "sinks");
    if (params.sinks.numel() != q.dim(2)) {
      throw Error(op, "sinks must be f32 [q_heads = " + str(q.dim(2)) + "], got " +
                          params.sinks.describe());
    }
  }
  const int64_t capacity = page_table.dim(1) * int64_t{layer.k.page_size()};
  if (params.max_length < 0) throw Error(op, "max_length must be >= 0");
  attention::DecodeJob job;
  job.q = &q;
  job.layer = &layer;
  job.page_table = &page_table;
  job.lengths = &lengths;
  job.out = &out;
  job.sinks = params.sinks.defined() ? &params.sinks : nullptr;
  job.batch = static_cast<int>(batch);
  job.q_len = static_cast<int>(q_len);
  job.q_heads = static_cast<int>(q.dim(2));
  job.kv_heads = kv_heads;
  job.dim = dim;
  job.table_width = static_cast<int>(page_table.dim(1));
  job.scale = params.scale;
  job.softcap = params.softcap;
  job.window = params.window;
  // Only sizes the split count: a ring layer never attends more than window + q_len - 1 keys.
  job.max_length = params.max_length > 0  ? params.max_length
                   : layer.ring_pages > 0 ? params.window + q_len - 1
                                          : capacity;
  static const uint32_t index_site =
      register_error_site(op, "lengths/page_table");  // once, not per step
  job.index_site = index_site;
  if (stream.device().is_cpu()) {
    cpu::decode_attention(job, stream);
  } else {
    MLXN_CUDA_BACKEND(cuda::decode_attention(job, stream));
  }
}

// ---- KvCache --------------------------------------------------------------------------------

KvCache::KvCache(KvCacheConfig config, const Stream& stream)
    : config_(std::move(config)), stream_(stream) {
  const char* op = "kv_cache";
  const auto& c = config_;
  tq::require_dim(c.head_dim, op);
  ops_detail::require_page_size(c.page_size, op);
  if (c.kv_heads <= 0 || c.layers.empty() || c.max_sequences <= 0 || c.max_query_tokens < 1 ||
      c.max_query_tokens > 8) {
    throw Error(op,
                "kv_heads and layers must be positive, max_sequences >= 1 and "
                "max_query_tokens 1..8");
  }
  bool any_full = false;
  std::map<int, int> group_of_window;
  for (const auto& l : c.layers) {
    if (l.window < 0) throw Error(op, "window must be >= 0");
    if (kv_type_is_tq(l.k) != kv_type_is_tq(l.v) || (!kv_type_is_tq(l.k) && l.k != l.v)) {
      throw Error(op, "K " + std::string(kv_type_name(l.k)) + " with V " +
                          std::string(kv_type_name(l.v)) +
                          ": attention supports K and V of one dense type, or TurboQuant K and V "
                          "of any bit widths");
    }
    if (l.window == 0) any_full = true;
  }
  groups_.push_back({});  // group 0: full attention
  groups_[0].num_pages = any_full ? c.num_pages : 0;
  if (any_full && c.num_pages <= 0) throw Error(op, "num_pages must be positive");
  for (const auto& l : c.layers) {
    if (l.window == 0) {
      layer_group_.push_back(0);
      continue;
    }
    auto [it, inserted] = group_of_window.try_emplace(l.window, static_cast<int>(groups_.size()));
    if (inserted) {
      Group g;
      g.window = l.window;
      g.ring_pages = ring_pages_of(l.window, c);
      g.num_pages = ring_group_pages(g.ring_pages, c);
      groups_.push_back(std::move(g));
    }
    layer_group_.push_back(it->second);
  }
  for (auto& g : groups_) {
    if (g.num_pages == 0) continue;
    const int64_t usable = g.ring_pages > 0 ? g.num_pages - 1 : g.num_pages;
    g.free.resize(static_cast<size_t>(usable));
    for (int64_t i = 0; i < usable; ++i)
      g.free[static_cast<size_t>(i)] = static_cast<int32_t>(usable - 1 - i);
    std::vector<int32_t> ids(static_cast<size_t>(g.num_pages));
    std::iota(ids.begin(), ids.end(), 0);
    g.page_ids =
        Buffer::from_host(std::span<const int32_t>(ids), {g.num_pages}, DType::i32, stream);
  }
  for (size_t i = 0; i < c.layers.size(); ++i) {
    const auto& l = c.layers[i];
    const Group& g = groups_[static_cast<size_t>(layer_group_[i])];
    KvLayerStorage s;
    s.k = KvStore::allocate(l.k, g.num_pages, c.kv_heads, c.page_size, c.head_dim, stream);
    s.v = KvStore::allocate(l.v, g.num_pages, c.kv_heads, c.page_size, c.head_dim, stream);
    s.window = l.window;
    s.ring_pages = g.ring_pages;
    s.page_ids = g.page_ids;
    Fp8Calibration pending;
    for (auto [type, scale, store, flag] : {std::tuple{l.k, l.k_fp8_scale, &s.k, &pending.k},
                                            std::tuple{l.v, l.v_fp8_scale, &s.v, &pending.v}}) {
      if (type != KvType::fp8) continue;
      if (scale < 0.0f) throw Error(op, "fp8 scale must be >= 0");
      if (scale > 0.0f)
        fill(store->scales, scale, stream);
      else
        *flag = true;
    }
    fp8_pending_.push_back(pending);
    layers_.push_back(std::move(s));
  }
  sequences_.resize(static_cast<size_t>(c.max_sequences));
}

const KvLayerStorage& KvCache::layer(int index) const {
  if (index < 0 || index >= num_layers()) {
    throw Error("kv_cache", "layer " + str(index) + " out of range (" + str(num_layers()) + ")");
  }
  return layers_[static_cast<size_t>(index)];
}

int KvCache::add_sequence() {
  for (size_t i = 0; i < sequences_.size(); ++i) {
    if (sequences_[i].live) continue;
    sequences_[i] = Sequence{true, 0, std::vector<std::vector<int32_t>>(groups_.size())};
    return static_cast<int>(i);
  }
  throw Error("kv_cache", "all " + str(config_.max_sequences) + " sequences are in use");
}

void KvCache::require_live(int sequence) const {
  if (sequence < 0 || sequence >= static_cast<int>(sequences_.size()) ||
      !sequences_[static_cast<size_t>(sequence)].live) {
    throw Error("kv_cache", "sequence " + str(sequence) + " is not a live sequence");
  }
}

int64_t KvCache::pages_for(const Group& group, int64_t length) const {
  const int64_t pages = (length + config_.page_size - 1) / config_.page_size;
  return group.ring_pages > 0 ? std::min<int64_t>(group.ring_pages, pages) : pages;
}

void KvCache::free_sequence(int sequence) {
  require_live(sequence);
  auto& s = sequences_[static_cast<size_t>(sequence)];
  for (size_t g = 0; g < groups_.size(); ++g) {
    auto& pages = s.pages[g];
    groups_[g].free.insert(groups_[g].free.end(), pages.rbegin(), pages.rend());
    pages.clear();
  }
  s = Sequence{};
}

int64_t KvCache::length(int sequence) const {
  require_live(sequence);
  return sequences_[static_cast<size_t>(sequence)].length;
}

int64_t KvCache::free_pages() const { return static_cast<int64_t>(groups_[0].free.size()); }

KvStep KvCache::plan(std::span<const int> sequences, std::span<const int> new_tokens) {
  const char* op = "kv_cache";
  if (sequences.size() != new_tokens.size() || sequences.empty()) {
    throw Error(op, "plan needs one token count per sequence and at least one sequence");
  }
  std::vector<bool> seen(sequences_.size(), false);
  const int P = config_.page_size;
  // Pages each group must hand out, checked before anything changes.
  std::vector<int64_t> need(groups_.size(), 0);
  for (size_t i = 0; i < sequences.size(); ++i) {
    require_live(sequences[i]);
    if (seen[static_cast<size_t>(sequences[i])]) {
      throw Error(op, "sequence " + str(sequences[i]) + " appears twice in one step");
    }
    seen[static_cast<size_t>(sequences[i])] = true;
    if (new_tokens[i] < 0) throw Error(op, "negative token count");
    const auto& s = sequences_[static_cast<size_t>(sequences[i])];
    const int64_t len = s.length + new_tokens[i];
    if (len > INT32_MAX) throw Error(op, "sequence longer than 2^31 tokens");
    for (size_t g = 0; g < groups_.size(); ++g) {
      if (groups_[g].num_pages == 0) continue;
      const int64_t want = pages_for(groups_[g], len);
      need[g] += std::max<int64_t>(0, want - static_cast<int64_t>(s.pages[g].size()));
    }
  }
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (need[g] > static_cast<int64_t>(groups_[g].free.size())) {
      throw Error(op, "out of cache pages: the step needs " + str(need[g]) + " more, " +
                          str(groups_[g].free.size()) + " are free" +
                          (groups_[g].ring_pages > 0 ? " (sliding-window pool)" : ""));
    }
  }
  KvStep step;
  step.sequences.assign(sequences.begin(), sequences.end());
  step.new_tokens.assign(new_tokens.begin(), new_tokens.end());
  step.layer_group = layer_group_;
  const int64_t total = std::accumulate(new_tokens.begin(), new_tokens.end(), int64_t{0});
  std::vector<int32_t> lengths;
  std::vector<std::vector<int32_t>> slots(groups_.size()), tables(groups_.size());
  std::vector<int64_t> widths(groups_.size(), 1);
  for (size_t g = 0; g < groups_.size(); ++g)
    if (groups_[g].ring_pages > 0)
      widths[g] = groups_[g].ring_pages;  // decode_attention needs the whole ring
  for (size_t i = 0; i < sequences.size(); ++i) {
    auto& s = sequences_[static_cast<size_t>(sequences[i])];
    const int64_t start = s.length, len = s.length + new_tokens[i];
    for (size_t g = 0; g < groups_.size(); ++g) {
      Group& gr = groups_[g];
      if (gr.num_pages == 0) continue;
      const int64_t want = pages_for(gr, len);
      while (static_cast<int64_t>(s.pages[g].size()) < want) {
        s.pages[g].push_back(gr.free.back());
        gr.free.pop_back();
      }
      widths[g] = std::max<int64_t>(widths[g], static_cast<int64_t>(s.pages[g].size()));
      const int64_t ring_slots = int64_t{gr.ring_pages} * P;
      for (int64_t p = start; p < len; ++p) {
        if (gr.ring_pages > 0 && p < len - ring_slots) {
          // Overwritten within this append before anyone could read it: the spare page.
          slots[g].push_back(static_cast<int32_t>((gr.num_pages - 1) * P + p % P));
          continue;
        }
        const int64_t n = gr.ring_pages > 0 ? (p / P) % gr.ring_pages : p / P;
        slots[g].push_back(static_cast<int32_t>(s.pages[g][static_cast<size_t>(n)] * P + p % P));
      }
    }
    s.length = len;
    step.max_length = std::max(step.max_length, len);
    lengths.push_back(static_cast<int32_t>(len));
  }
  const int64_t batch = static_cast<int64_t>(sequences.size());
  step.lengths = Buffer::from_host(std::span<const int32_t>(lengths), {batch}, DType::i32, stream_);
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (groups_[g].num_pages == 0) {
      step.slots.emplace_back();
      step.page_tables.emplace_back();
      continue;
    }
    auto& table = tables[g];
    table.assign(static_cast<size_t>(batch * widths[g]), 0);
    for (int64_t b = 0; b < batch; ++b) {
      const auto& pages =
          sequences_[static_cast<size_t>(sequences[static_cast<size_t>(b)])].pages[g];
      std::copy(pages.begin(), pages.end(), table.begin() + b * widths[g]);
    }
    step.page_tables.push_back(Buffer::from_host(std::span<const int32_t>(table),
                                                 {batch, widths[g]}, DType::i32, stream_));
    step.slots.push_back(total > 0 ? Buffer::from_host(std::span<const int32_t>(slots[g]), {total},
                                                       DType::i32, stream_)
                                   : Buffer::empty({0}, DType::i32, stream_));
  }
  return step;
}

void KvCache::append(int layer_index, const Buffer& k, const Buffer& v, const KvStep& step) {
  const KvLayerStorage& l = layer(layer_index);
  Fp8Calibration& pending = fp8_pending_[static_cast<size_t>(layer_index)];
  kv_append(k, v, step.slots_of(layer_index), l, stream_, pending, "layer " + str(layer_index));
  pending = {};
}

void KvCache::attend(int layer_index, const Buffer& q, const Buffer& out,
                     DecodeAttentionParams params, const KvStep& step) const {
  const KvLayerStorage& l = layer(layer_index);
  if (l.window > 0) params.window = l.window;
  if (params.max_length == 0) params.max_length = step.max_length;
  decode_attention(q, l, step.page_table_of(layer_index), step.lengths, out, params, stream_);
}

int64_t KvCache::required_bytes(const KvCacheConfig& c) {
  const char* op = "kv_cache";
  tq::require_dim(c.head_dim, op);
  ops_detail::require_page_size(c.page_size, op);
  // What the constructor allocates, store by store: each layer's K and V over its group's pages
  // (fp8 with its per-head scales), and one page-id table per group.
  std::map<int, int64_t> group_pages;  // window (0: full attention) -> pages
  int64_t total = 0;
  for (const KvLayerConfig& l : c.layers) {
    const int64_t pages =
        l.window == 0 ? c.num_pages : ring_group_pages(ring_pages_of(l.window, c), c);
    group_pages.emplace(l.window, pages);
    for (KvType t : {l.k, l.v}) {
      total += pages * c.kv_heads * c.page_size * kv_vector_bytes(t, c.head_dim) +
               (t == KvType::fp8 ? int64_t{4} * c.kv_heads : 0);
    }
  }
  for (const auto& [window, pages] : group_pages) total += pages * 4;
  return total;
}

bool KvCache::fp8_calibration_pending() const {
  return std::any_of(fp8_pending_.begin(), fp8_pending_.end(),
                     [](const Fp8Calibration& p) { return p.k || p.v; });
}

int64_t KvCache::memory_bytes() const {
  int64_t total = 0;
  for (const auto& l : layers_) total += l.k.bytes() + l.v.bytes();
  for (const auto& g : groups_)
    if (g.page_ids.defined()) total += g.page_ids.nbytes();
  return total;
}

std::string KvCache::memory_report() const {
  std::string r;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const auto& l = layers_[i];
    r +=
        "layer " + str(static_cast<int64_t>(i)) + ": K " + std::string(kv_type_name(l.k.type)) +
        " " + str(l.k.bytes()) + " B, V " + std::string(kv_type_name(l.v.type)) + " " +
        str(l.v.bytes()) + " B, " + str(l.k.num_pages()) + " pages" +
        (l.window > 0 ? ", window " + str(l.window) + " (ring of " + str(l.ring_pages) + ")" : "") +
        "\n";
  }
  r += "total: " + str(memory_bytes()) + " B\n";
  return r;
}

}  // namespace mlxn
