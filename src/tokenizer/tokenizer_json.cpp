// tokenizer.json (as `tokenizers` serializes a Tokenizer) to the internal description. Fields
// and defaults follow `tokenizers`' serde definitions; a component this library does not run is
// refused by name, with the list of those it does.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "io/json_util.h"
#include "mlxn/core/error.h"
#include "tokenizer/tokenizer_impl.h"

namespace mlxn::tokenizer_detail {

namespace {

using json = nlohmann::json;

constexpr const char* kNormalizers = "NFC, NFKC, Lowercase, Prepend, Replace, Sequence";
constexpr const char* kPreTokenizers = "ByteLevel, Split, Metaspace, Digits, Sequence";
constexpr const char* kDecoders =
    "ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, Sequence";
constexpr const char* kPostProcessors = "TemplateProcessing, ByteLevel, Sequence";
constexpr const char* kModels = "BPE";
// Sequences inside Sequences: real files nest one level; the bound keeps a hostile file from
// recursing the stack away.
constexpr int kMaxNesting = 32;

std::string json_type(const json& value) {
  return value.is_null() ? "null" : std::string(value.type_name());
}

// Reads one file; every message names the file and the path of the offending value.
class Reader {
 public:
  explicit Reader(std::string origin) : origin_(std::move(origin)) {}

  [[noreturn]] void fail(std::string_view path, std::string_view what) const {
    throw Error(kOp, cat(origin_, ": ", path, " ", what));
  }

  const json& object(const json& value, std::string_view path) const {
    if (!value.is_object()) fail(path, cat("must be an object, not ", json_type(value)));
    return value;
  }

  // The member `key`, or nullptr when it is absent or null (serde's Option).
  const json* find(const json& obj, const char* key) const {
    const auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }

  std::string string(const json& obj, const char* key, std::string_view path) const {
    const json* value = find(obj, key);
    if (value == nullptr) fail(cat(path, ".", key), "is missing");
    return as_string(*value, cat(path, ".", key));
  }

  std::string as_string(const json& value, std::string_view path) const {
    if (!value.is_string()) fail(path, cat("must be a string, not ", json_type(value)));
    return value.get<std::string>();
  }

  std::optional<std::string> optional_string(const json& obj, const char* key,
                                             std::string_view path) const {
    const json* value = find(obj, key);
    if (value == nullptr) return std::nullopt;
    return as_string(*value, cat(path, ".", key));
  }

  bool boolean(const json& obj, const char* key, std::string_view path, bool fallback) const {
    const json* value = find(obj, key);
    if (value == nullptr) return fallback;
    if (!value->is_boolean()) {
      fail(cat(path, ".", key), cat("must be a boolean, not ", json_type(*value)));
    }
    return value->get<bool>();
  }

  int64_t as_integer(const json& value, std::string_view path, int64_t lo, int64_t hi) const {
    if (!value.is_number_integer()) {
      fail(path, cat("must be an integer, not ", json_type(value)));
    }
    if (value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(hi)) {
      fail(path, cat(value.get<uint64_t>(), " is out of range [", lo, ", ", hi, "]"));
    }
    const auto v = value.get<int64_t>();
    if (v < lo || v > hi) fail(path, cat(v, " is out of range [", lo, ", ", hi, "]"));
    return v;
  }

  int64_t integer(const json& obj, const char* key, std::string_view path, int64_t lo, int64_t hi,
                  std::optional<int64_t> fallback = std::nullopt) const {
    const json* value = find(obj, key);
    if (value == nullptr) {
      if (fallback) return *fallback;
      fail(cat(path, ".", key), "is missing");
    }
    return as_integer(*value, cat(path, ".", key), lo, hi);
  }

  const json& array(const json& obj, const char* key, std::string_view path) const {
    const json* value = find(obj, key);
    if (value == nullptr) fail(cat(path, ".", key), "is missing");
    if (!value->is_array()) {
      fail(cat(path, ".", key), cat("must be an array, not ", json_type(*value)));
    }
    return *value;
  }

  std::string type(const json& obj, std::string_view path) const {
    return string(object(obj, path), "type", path);
  }

  // Counts the Sequence levels entered while it lives.
  class Nesting {
   public:
    Nesting(const Reader& reader, std::string_view path) : reader_(reader) {
      if (++reader_.depth_ > kMaxNesting) reader_.fail(path, "nests Sequences too deeply");
    }
    ~Nesting() { --reader_.depth_; }
    Nesting(const Nesting&) = delete;
    Nesting& operator=(const Nesting&) = delete;

   private:
    const Reader& reader_;
  };

  [[noreturn]] void unsupported(std::string_view path, std::string_view type,
                                const char* supported) const {
    fail(path, cat("type \"", type, "\" unsupported (supported: ", supported, ")"));
  }

  // One character (Metaspace's replacement, Strip's content).
  std::string one_char(const json& obj, const char* key, std::string_view path,
                       std::optional<std::string> fallback = std::nullopt) const {
    std::optional<std::string> value = optional_string(obj, key, path);
    if (!value) value = fallback;
    if (!value) fail(cat(path, ".", key), "is missing");
    if (value->empty() || utf8_length(static_cast<unsigned char>((*value)[0])) != value->size()) {
      fail(cat(path, ".", key), cat("must be one character, not ", text::in_quotes(*value)));
    }
    return *value;
  }

  PatternDesc pattern(const json& obj, std::string_view path) const {
    const std::string p = cat(path, ".pattern");
    const json* value = find(obj, "pattern");
    if (value == nullptr) fail(p, "is missing");
    object(*value, p);
    if (value->size() != 1) fail(p, "must be {\"String\": ...} or {\"Regex\": ...}");
    PatternDesc desc;
    if (const json* s = find(*value, "String")) {
      desc.text = as_string(*s, cat(p, ".String"));
    } else if (const json* r = find(*value, "Regex")) {
      desc.regex = true;
      desc.text = as_string(*r, cat(p, ".Regex"));
    } else {
      fail(p, "must be {\"String\": ...} or {\"Regex\": ...}");
    }
    return desc;
  }

  PrependScheme prepend_scheme(const json& obj, std::string_view path) const {
    // Files before tokenizers 0.19 say add_prefix_space; "false" means never.
    std::optional<PrependScheme> scheme;
    if (const auto name = optional_string(obj, "prepend_scheme", path)) {
      if (*name == "always") {
        scheme = PrependScheme::always;
      } else if (*name == "first") {
        scheme = PrependScheme::first;
      } else if (*name == "never") {
        scheme = PrependScheme::never;
      } else {
        fail(cat(path, ".prepend_scheme"),
             cat(text::in_quotes(*name), " unsupported (supported: always, first, never)"));
      }
    }
    if (find(obj, "add_prefix_space") != nullptr && !boolean(obj, "add_prefix_space", path, true)) {
      if (scheme && *scheme != PrependScheme::never) {
        fail(path, "add_prefix_space false contradicts prepend_scheme");
      }
      return PrependScheme::never;
    }
    return scheme.value_or(PrependScheme::always);
  }

  // ---- components ----

  void normalizer(const json& value, const std::string& path,
                  std::vector<NormalizerDesc>& out) const {
    const std::string type = this->type(value, path);
    NormalizerDesc d;
    if (type == "Sequence") {
      const Nesting nesting(*this, path);
      const json& list = array(value, "normalizers", path);
      for (size_t i = 0; i < list.size(); ++i) {
        normalizer(list[i], cat(path, ".normalizers[", i, "]"), out);
      }
      return;
    } else if (type == "NFC") {
      d.kind = NormalizerDesc::Kind::nfc;
    } else if (type == "NFKC") {
      d.kind = NormalizerDesc::Kind::nfkc;
    } else if (type == "Lowercase") {
      d.kind = NormalizerDesc::Kind::lowercase;
    } else if (type == "Prepend") {
      d.kind = NormalizerDesc::Kind::prepend;
      d.content = string(value, "prepend", path);
    } else if (type == "Replace") {
      d.kind = NormalizerDesc::Kind::replace;
      d.pattern = pattern(value, path);
      d.content = string(value, "content", path);
    } else {
      unsupported(path, type, kNormalizers);
    }
    out.push_back(std::move(d));
  }

  void pre_tokenizer(const json& value, const std::string& path,
                     std::vector<PreTokenizerDesc>& out) const {
    const std::string type = this->type(value, path);
    PreTokenizerDesc d;
    if (type == "Sequence") {
      const Nesting nesting(*this, path);
      const json& list = array(value, "pretokenizers", path);
      for (size_t i = 0; i < list.size(); ++i) {
        pre_tokenizer(list[i], cat(path, ".pretokenizers[", i, "]"), out);
      }
      return;
    } else if (type == "ByteLevel") {
      d.kind = PreTokenizerDesc::Kind::byte_level;
      // ByteLevel::default(): add_prefix_space and use_regex true.
      d.add_prefix_space = boolean(value, "add_prefix_space", path, true);
      d.use_regex = boolean(value, "use_regex", path, true);
    } else if (type == "Split") {
      d.kind = PreTokenizerDesc::Kind::split;
      d.pattern = pattern(value, path);
      d.invert = boolean(value, "invert", path, false);
      const std::string behavior = string(value, "behavior", path);
      static const std::unordered_map<std::string, SplitBehavior> kBehaviors = {
          {"Removed", SplitBehavior::removed},
          {"Isolated", SplitBehavior::isolated},
          {"MergedWithPrevious", SplitBehavior::merged_with_previous},
          {"MergedWithNext", SplitBehavior::merged_with_next},
          {"Contiguous", SplitBehavior::contiguous}};
      const auto it = kBehaviors.find(behavior);
      if (it == kBehaviors.end()) {
        fail(cat(path, ".behavior"),
             cat(text::in_quotes(behavior),
                 " unsupported (supported: Removed, Isolated, MergedWithPrevious, "
                 "MergedWithNext, Contiguous)"));
      }
      d.behavior = it->second;
    } else if (type == "Metaspace") {
      d.kind = PreTokenizerDesc::Kind::metaspace;
      d.replacement = one_char(value, "replacement", path, "\xe2\x96\x81");
      d.prepend_scheme = prepend_scheme(value, path);
      d.split = boolean(value, "split", path, true);
    } else if (type == "Digits") {
      d.kind = PreTokenizerDesc::Kind::digits;
      d.individual_digits = boolean(value, "individual_digits", path, false);
    } else {
      unsupported(path, type, kPreTokenizers);
    }
    out.push_back(std::move(d));
  }

  void decoder(const json& value, const std::string& path, std::vector<DecoderDesc>& out) const {
    const std::string type = this->type(value, path);
    DecoderDesc d;
    if (type == "Sequence") {
      const Nesting nesting(*this, path);
      const json& list = array(value, "decoders", path);
      for (size_t i = 0; i < list.size(); ++i) {
        decoder(list[i], cat(path, ".decoders[", i, "]"), out);
      }
      return;
    } else if (type == "ByteLevel") {
      d.kind = DecoderDesc::Kind::byte_level;
    } else if (type == "Metaspace") {
      d.kind = DecoderDesc::Kind::metaspace;
      d.replacement = one_char(value, "replacement", path, "\xe2\x96\x81");
      d.prepend_scheme = prepend_scheme(value, path);
    } else if (type == "ByteFallback") {
      d.kind = DecoderDesc::Kind::byte_fallback;
    } else if (type == "Fuse") {
      d.kind = DecoderDesc::Kind::fuse;
    } else if (type == "Strip") {
      d.kind = DecoderDesc::Kind::strip;
      d.content = one_char(value, "content", path);
      constexpr int64_t kMax = std::numeric_limits<int32_t>::max();
      d.start = static_cast<size_t>(integer(value, "start", path, 0, kMax));
      d.stop = static_cast<size_t>(integer(value, "stop", path, 0, kMax));
    } else if (type == "Replace") {
      d.kind = DecoderDesc::Kind::replace;
      d.pattern = pattern(value, path);
      d.content = string(value, "content", path);
    } else {
      unsupported(path, type, kDecoders);
    }
    out.push_back(std::move(d));
  }

  // TemplateProcessing's "single": [{"SpecialToken": {"id": name}} | {"Sequence": {"id": "A"}}],
  // or the "<s> $A" string form.
  std::vector<TemplateItem> single_template(const json& value, const std::string& path) const {
    const json& specials_json =
        object(*require(value, "special_tokens", path), cat(path, ".special_tokens"));
    const json* single = find(value, "single");
    if (single == nullptr) fail(cat(path, ".single"), "is missing");
    const auto special_ids = [&](const std::string& name, const std::string& where) {
      const json* entry = find(specials_json, name.c_str());
      if (entry == nullptr) {
        fail(where, cat("names ", text::in_quotes(name), ", which special_tokens lacks"));
      }
      const std::string entry_path = cat(path, ".special_tokens.", name);
      const json& ids = array(object(*entry, entry_path), "ids", entry_path);
      std::vector<int32_t> out;
      for (size_t i = 0; i < ids.size(); ++i) {
        out.push_back(static_cast<int32_t>(as_integer(ids[i], cat(entry_path, ".ids[", i, "]"), 0,
                                                      std::numeric_limits<int32_t>::max())));
      }
      return out;
    };
    const auto sequence_item = [&](std::string_view name, const std::string& where) {
      if (name != "A") {
        fail(where, cat("sequence ", text::in_quotes(name),
                        " unsupported in a single-sequence template (supported: A)"));
      }
      return TemplateItem{true, {}};
    };
    std::vector<TemplateItem> items;
    const std::string single_path = cat(path, ".single");
    if (single->is_string()) {
      const std::string spec = single->get<std::string>();
      size_t i = 0;
      while (i < spec.size()) {
        if (spec[i] == ' ') {
          ++i;
          continue;
        }
        const size_t end = std::min(spec.find(' ', i), spec.size());
        std::string piece = spec.substr(i, end - i);
        i = end;
        piece = piece.substr(0, piece.find(':'));  // a ":type_id" suffix
        if (piece.starts_with('$')) {
          const std::string name = piece.size() == 1 ? "A" : piece.substr(1);
          items.push_back(sequence_item(name, single_path));
        } else {
          items.push_back({false, special_ids(piece, single_path)});
        }
      }
      return items;
    }
    if (!single->is_array()) {
      fail(single_path, cat("must be an array or a string, not ", json_type(*single)));
    }
    for (size_t i = 0; i < single->size(); ++i) {
      const std::string item_path = cat(single_path, "[", i, "]");
      const json& item = object((*single)[i], item_path);
      if (const json* s = find(item, "SpecialToken")) {
        const std::string p = cat(item_path, ".SpecialToken");
        items.push_back({false, special_ids(string(object(*s, p), "id", p), p)});
      } else if (const json* q = find(item, "Sequence")) {
        const std::string p = cat(item_path, ".Sequence");
        items.push_back(sequence_item(string(object(*q, p), "id", p), p));
      } else {
        fail(item_path, "must be {\"SpecialToken\": ...} or {\"Sequence\": ...}");
      }
    }
    return items;
  }

  void post_processor(const json& value, const std::string& path,
                      std::vector<std::vector<TemplateItem>>& out) const {
    const std::string type = this->type(value, path);
    if (type == "Sequence") {
      const Nesting nesting(*this, path);
      const json& list = array(value, "processors", path);
      for (size_t i = 0; i < list.size(); ++i) {
        post_processor(list[i], cat(path, ".processors[", i, "]"), out);
      }
    } else if (type == "TemplateProcessing") {
      out.push_back(single_template(value, path));
    } else if (type != "ByteLevel") {
      // ByteLevel only trims offsets, which encode() does not report.
      unsupported(path, type, kPostProcessors);
    }
  }

  const json* require(const json& obj, const char* key, std::string_view path) const {
    const json* value = find(obj, key);
    if (value == nullptr) fail(cat(path, ".", key), "is missing");
    return value;
  }

  BpeDesc bpe(const json& model) const {
    const std::string path = "model";
    BpeDesc d;
    if (const json* dropout = find(model, "dropout")) {
      if (!dropout->is_number()) fail("model.dropout", "must be a number or null");
      // A positive dropout samples merges at random: no fixed ids to match.
      if (dropout->get<double>() != 0.0)
        fail("model.dropout", "must be null or 0 (BPE dropout is random)");
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (const auto affix = optional_string(model, key, path); affix && !affix->empty()) {
        fail(cat(path, ".", key),
             cat(text::in_quotes(*affix), " unsupported (WordPiece-style affixes are not run)"));
      }
    }
    d.unk_token = optional_string(model, "unk_token", path);
    d.fuse_unk = boolean(model, "fuse_unk", path, false);
    d.byte_fallback = boolean(model, "byte_fallback", path, false);
    d.ignore_merges = boolean(model, "ignore_merges", path, false);

    const json* vocab = find(model, "vocab");
    if (vocab == nullptr) fail("model.vocab", "is missing");
    if (!vocab->is_object()) {
      fail("model.vocab", cat("must be an object of token -> id, not ", json_type(*vocab)));
    }
    d.vocab.reserve(vocab->size());
    constexpr int64_t kMaxId = std::numeric_limits<int32_t>::max() - 1;
    std::unordered_map<int64_t, size_t> by_id;  // id -> index in d.vocab
    by_id.reserve(vocab->size());
    for (const auto& [token, id_value] : vocab->items()) {
      // The message path is only built for a bad entry: vocabularies have 10^5 entries.
      const int64_t id = id_value.is_number_unsigned() && id_value.get<uint64_t>() <= kMaxId
                             ? id_value.get<int64_t>()
                             : as_integer(id_value, cat("model.vocab.", token), 0, kMaxId);
      if (const auto [it, fresh] = by_id.emplace(id, d.vocab.size()); !fresh) {
        fail("model.vocab",
             cat("gives id ", id, " to both ", text::in_quotes(d.vocab[it->second].first), " and ",
                 text::in_quotes(token)));
      }
      d.vocab.emplace_back(token, static_cast<int32_t>(id));
    }

    const json& merges = array(model, "merges", path);
    d.merges.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const json& m = merges[i];
      if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        d.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
        continue;
      }
      const std::string p = cat("model.merges[", i, "]");
      if (m.is_string()) {
        // "a b": exactly one space (tokens never hold one), as tokenizers' BadMerges check.
        const std::string s = m.get<std::string>();
        const size_t space = s.find(' ');
        if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
          fail(p, cat(text::in_quotes(s), " is not two tokens separated by one space"));
        }
        d.merges.emplace_back(s.substr(0, space), s.substr(space + 1));
      } else if (m.is_array() && m.size() == 2) {
        d.merges.emplace_back(as_string(m[0], cat(p, "[0]")), as_string(m[1], cat(p, "[1]")));
      } else {
        fail(p, cat("must be \"a b\" or [\"a\", \"b\"], not ", json_type(m)));
      }
    }
    return d;
  }

 private:
  std::string origin_;
  mutable int depth_ = 0;
};

}  // namespace

Description parse_tokenizer_json(std::string_view text, const std::string& origin) {
  const json root = io::json_util::parse_strict<json>(text, origin, kOp, "tokenizer");
  const Reader r(origin);
  r.object(root, "the top level");
  Description d;
  d.origin = origin;

  const json* model = r.find(root, "model");
  if (model == nullptr) r.fail("model", "is missing");
  r.object(*model, "model");
  // Old files leave out the model's type; tokenizers then tries each model, and only BPE has
  // merges.
  const std::optional<std::string> model_type = r.optional_string(*model, "type", "model");
  if (model_type ? *model_type != "BPE" : !model->contains("merges")) {
    r.unsupported("model", model_type.value_or("(none)"), kModels);
  }
  d.model = r.bpe(*model);

  if (const json* n = r.find(root, "normalizer")) r.normalizer(*n, "normalizer", d.normalizers);
  if (const json* p = r.find(root, "pre_tokenizer")) {
    r.pre_tokenizer(*p, "pre_tokenizer", d.pre_tokenizers);
  }
  if (const json* dec = r.find(root, "decoder")) {
    d.decoders.emplace();
    r.decoder(*dec, "decoder", *d.decoders);
  }
  if (const json* post = r.find(root, "post_processor")) {
    r.post_processor(*post, "post_processor", d.templates);
  }
  if (const json* added = r.find(root, "added_tokens")) {
    if (!added->is_array())
      r.fail("added_tokens", cat("must be an array, not ", json_type(*added)));
    for (size_t i = 0; i < added->size(); ++i) {
      const std::string path = cat("added_tokens[", i, "]");
      const json& t = r.object((*added)[i], path);
      AddedTokenDesc token;
      token.content = r.string(t, "content", path);
      token.id = static_cast<int32_t>(
          r.integer(t, "id", path, 0, std::numeric_limits<int32_t>::max() - 1));
      token.special = r.boolean(t, "special", path, false);
      token.single_word = r.boolean(t, "single_word", path, false);
      token.lstrip = r.boolean(t, "lstrip", path, false);
      token.rstrip = r.boolean(t, "rstrip", path, false);
      token.normalized = r.boolean(t, "normalized", path, !token.special);
      d.added_tokens.push_back(std::move(token));
    }
  }
  return d;
}

}  // namespace mlxn::tokenizer_detail
