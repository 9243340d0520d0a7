// The encode pipeline of `tokenizers` (added tokens -> normalizer -> pre-tokenizer -> model ->
// post-processor), decoding, and the public Tokenizer / StreamingDecoder.
#include "mlxn/tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "io/json_util.h"
#include "io/mapped_file.h"
#include "mlxn/core/error.h"
#include "mlxn/io/gguf.h"
#include "tokenizer/tokenizer_impl.h"

namespace mlxn {

namespace td = tokenizer_detail;
using td::cat;
using td::kOp;

// ---- patterns ----

namespace tokenizer_detail {

Pattern::Pattern(const PatternDesc& desc, const std::string& where) {
  if (desc.regex) {
    regex_ = std::make_unique<Regex>(desc.text, where);
  } else {
    // An empty literal would match between every two characters; no tokenizer uses one.
    if (desc.text.empty()) throw Error(kOp, cat(where, ": the String pattern is empty"));
    literal_ = desc.text;
  }
}

void Pattern::find_all(std::string_view text, std::vector<std::pair<size_t, size_t>>& out) const {
  if (regex_) {
    regex_->find_all(text, out);
    return;
  }
  for (size_t at = text.find(literal_); at != std::string_view::npos;
       at = text.find(literal_, at + literal_.size())) {
    out.emplace_back(at, at + literal_.size());
  }
}

std::string Pattern::replace_all(std::string_view text, std::string_view content) const {
  std::vector<std::pair<size_t, size_t>> matches;
  find_all(text, matches);
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size() + matches.size() * content.size());
  size_t last = 0;
  for (const auto& [start, end] : matches) {
    out.append(text.substr(last, start - last)).append(content);
    last = end;
  }
  out.append(text.substr(last));
  return out;
}

bool Pattern::is_single_char() const {
  return !regex_ && utf8_length(static_cast<unsigned char>(literal_[0])) == literal_.size();
}

}  // namespace tokenizer_detail

namespace {

// A piece of the text on its way through the pipeline. `at_origin`: it starts where the text
// starts (Metaspace's prepend_scheme "first" looks at this); `id`: an added token's id.
struct Piece {
  std::string text;
  bool at_origin = false;
  int32_t id = -1;
};

using Ranges = std::vector<std::pair<size_t, size_t>>;

// NormalizedString::split: the matches of a pattern (or, inverted, the text between them) with
// the delimiter behaviour applied; empty pieces dropped.
void split_piece(const Piece& piece, const Ranges& matches, bool invert, td::SplitBehavior behavior,
                 std::vector<Piece>& out) {
  // (start, end, is_match) covering the whole text, as Pattern::find_matches returns them.
  struct Part {
    size_t start;
    size_t end;
    bool is_match;
  };
  std::vector<Part> parts;
  size_t prev = 0;
  for (const auto& [start, end] : matches) {
    if (prev != start) parts.push_back({prev, start, invert});
    parts.push_back({start, end, !invert});
    prev = end;
  }
  if (prev != piece.text.size()) parts.push_back({prev, piece.text.size(), invert});

  std::vector<Part> kept;
  switch (behavior) {
    case td::SplitBehavior::isolated:
      kept = parts;
      break;
    case td::SplitBehavior::removed:
      for (const Part& p : parts) {
        if (!p.is_match) kept.push_back(p);
      }
      break;
    case td::SplitBehavior::contiguous: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match == previous_match && !kept.empty()) {
          kept.back().end = p.end;
        } else {
          kept.push_back(p);
        }
        previous_match = p.is_match;
      }
      break;
    }
    case td::SplitBehavior::merged_with_previous: {
      bool previous_match = false;
      for (const Part& p : parts) {
        if (p.is_match && !previous_match && !kept.empty()) {
          kept.back().end = p.end;
        } else {
          kept.push_back(p);
        }
        previous_match = p.is_match;
      }
      break;
    }
    case td::SplitBehavior::merged_with_next: {
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().start = it->start;
        } else {
          kept.push_back(*it);
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
  }
  for (const Part& p : kept) {
    if (p.end == p.start) continue;
    out.push_back({piece.text.substr(p.start, p.end - p.start), piece.at_origin && p.start == 0});
  }
}

// Every character a match of its own (tokenizers' Pattern for char predicates).
template <class Predicate>
Ranges char_matches(std::string_view s, Predicate predicate) {
  Ranges ranges;
  for (size_t i = 0; i < s.size();) {
    size_t n = 0;
    const char32_t cp = td::utf8_decode(s, i, &n);
    if (predicate(cp)) ranges.emplace_back(i, i + n);
    i += n;
  }
  return ranges;
}

// The GPT-2 pattern of the ByteLevel pre-tokenizer (use_regex).
const td::Regex& gpt2_regex() {
  static const td::Regex regex(
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", "ByteLevel");
  return regex;
}

void pre_tokenize(const Tokenizer::Impl::PreTokenizer& step, const Piece& piece,
                  std::vector<Piece>& out) {
  const td::PreTokenizerDesc& d = step.desc;
  switch (d.kind) {
    case td::PreTokenizerDesc::Kind::byte_level: {
      Piece prefixed = piece;
      if (d.add_prefix_space && prefixed.text.front() != ' ')
        prefixed.text.insert(prefixed.text.begin(), ' ');
      std::vector<Piece> parts;
      if (d.use_regex) {
        Ranges matches;
        gpt2_regex().find_all(prefixed.text, matches);
        split_piece(prefixed, matches, false, td::SplitBehavior::isolated, parts);
      } else {
        parts.push_back(std::move(prefixed));
      }
      for (Piece& p : parts) {
        p.text = td::to_byte_level(p.text);
        out.push_back(std::move(p));
      }
      return;
    }
    case td::PreTokenizerDesc::Kind::split: {
      Ranges matches;
      step.pattern->find_all(piece.text, matches);
      split_piece(piece, matches, d.invert, d.behavior, out);
      return;
    }
    case td::PreTokenizerDesc::Kind::metaspace: {
      Piece replaced{std::string(), piece.at_origin};
      replaced.text.reserve(piece.text.size() + d.replacement.size());
      for (char c : piece.text) {
        if (c == ' ') {
          replaced.text.append(d.replacement);
        } else {
          replaced.text.push_back(c);
        }
      }
      const bool needs_prefix = !replaced.text.starts_with(d.replacement);
      if (needs_prefix && (d.prepend_scheme == td::PrependScheme::always ||
                           (d.prepend_scheme == td::PrependScheme::first && piece.at_origin))) {
        replaced.text.insert(0, d.replacement);
      }
      if (!d.split) {
        out.push_back(std::move(replaced));
        return;
      }
      const char32_t replacement = td::first_code_point(d.replacement);
      const Ranges matches =
          char_matches(replaced.text, [replacement](char32_t cp) { return cp == replacement; });
      split_piece(replaced, matches, false, td::SplitBehavior::merged_with_next, out);
      return;
    }
    case td::PreTokenizerDesc::Kind::digits: {
      const Ranges matches = char_matches(piece.text, td::is_numeric);
      split_piece(piece, matches, false,
                  d.individual_digits ? td::SplitBehavior::isolated : td::SplitBehavior::contiguous,
                  out);
      return;
    }
  }
}

// Start of the whitespace run that ends `s` (Rust regex `\s*$`).
size_t trailing_space_start(std::string_view s) {
  size_t start = s.size();
  while (start > 0) {
    const size_t prev = td::last_code_point_start(s.substr(0, start));
    if (!td::is_white_space(td::first_code_point(s.substr(prev)))) break;
    start = prev;
  }
  return start;
}

// Length of the whitespace run that starts `s` (Rust regex `^\s*`).
size_t leading_space_length(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t n = 0;
    if (!td::is_white_space(td::utf8_decode(s, i, &n))) break;
    i += n;
  }
  return i;
}

// The leftmost position at or after `from` where an added token matches, and there the longest
// token (aho-corasick's LeftmostLongest); nullptr when none matches.
const Tokenizer::Impl::AddedToken* find_added(const Tokenizer::Impl::AddedMatcher& matcher,
                                              std::string_view s, size_t from, size_t* at) {
  for (size_t i = from; i < s.size(); ++i) {
    for (uint32_t index : matcher.by_first_byte[static_cast<uint8_t>(s[i])]) {
      const Tokenizer::Impl::AddedToken& token = matcher.tokens[index];
      if (s.substr(i).starts_with(token.content)) {
        *at = i;
        return &token;
      }
    }
  }
  return nullptr;
}

// AddedVocabulary::find_matches + split_with_indices: the added tokens in `piece`, with their
// single_word / lstrip / rstrip rules, and the text between them.
void split_added(const Tokenizer::Impl::AddedMatcher& matcher, const Piece& piece,
                 bool parse_special, std::vector<Piece>& out) {
  const std::string_view s = piece.text;
  size_t start_offset = 0;
  const auto push_text = [&](size_t start, size_t end) {
    out.push_back({std::string(s.substr(start, end - start)), piece.at_origin && start == 0});
  };
  size_t start = 0;
  for (size_t from = 0; const auto* found = find_added(matcher, s, from, &start);) {
    size_t stop = start + found->content.size();
    from = stop;  // the matcher resumes after the match whatever becomes of it
    if (found->special && !parse_special) continue;
    if (found->single_word) {
      const bool space_before = start == 0 || !td::is_word_char(td::first_code_point(s.substr(
                                                  td::last_code_point_start(s.substr(0, start)))));
      const bool space_after =
          stop == s.size() || !td::is_word_char(td::first_code_point(s.substr(stop)));
      if (!space_before || !space_after) continue;
    }
    // lstrip takes the whitespace before the token unless an earlier token already took it.
    if (found->lstrip) start = std::max(trailing_space_start(s.substr(0, start)), start_offset);
    if (found->rstrip) stop += leading_space_length(s.substr(stop));
    if (start_offset < start) push_text(start_offset, start);
    out.push_back({std::string(s.substr(start, stop - start)), false, found->id});
    start_offset = stop;
  }
  if (start_offset < s.size()) push_text(start_offset, s.size());
}

}  // namespace

// ---- Impl ----

void Tokenizer::Impl::AddedMatcher::build() {
  for (auto& list : by_first_byte) list.clear();
  for (uint32_t i = 0; i < tokens.size(); ++i) {
    by_first_byte[static_cast<uint8_t>(tokens[i].content[0])].push_back(i);
  }
  for (auto& list : by_first_byte) {
    // Longest first; among equal lengths the earlier token (special ones come first).
    std::stable_sort(list.begin(), list.end(), [this](uint32_t a, uint32_t b) {
      return tokens[a].content.size() > tokens[b].content.size();
    });
  }
}

std::string Tokenizer::Impl::normalize(std::string_view text) const {
  std::string s(text);
  for (const Normalizer& n : normalizers) {
    switch (n.desc.kind) {
      case td::NormalizerDesc::Kind::nfc:
        s = td::nfc(s);
        break;
      case td::NormalizerDesc::Kind::nfkc:
        s = td::nfkc(s);
        break;
      case td::NormalizerDesc::Kind::lowercase:
        s = td::lowercase(s);
        break;
      case td::NormalizerDesc::Kind::prepend:
        if (!s.empty()) s.insert(0, n.desc.content);
        break;
      case td::NormalizerDesc::Kind::replace:
        s = n.pattern->replace_all(s, n.desc.content);
        break;
    }
  }
  return s;
}

Tokenizer::Impl::Impl(const td::Description& d) : origin(d.origin) {
  if (const auto* bpe = std::get_if<td::BpeDesc>(&d.model)) {
    model = td::make_bpe_model(*bpe, origin);
  } else {
    model = td::make_spm_model(std::get<td::SpmDesc>(d.model), origin);
  }
  for (const td::NormalizerDesc& desc : d.normalizers) {
    Normalizer n{desc, nullptr};
    if (desc.kind == td::NormalizerDesc::Kind::replace) {
      n.pattern = std::make_unique<td::Pattern>(desc.pattern, cat(origin, ": normalizer"));
    }
    normalizers.push_back(std::move(n));
  }
  for (const td::PreTokenizerDesc& desc : d.pre_tokenizers) {
    PreTokenizer p{desc, nullptr};
    if (desc.kind == td::PreTokenizerDesc::Kind::split) {
      p.pattern = std::make_unique<td::Pattern>(desc.pattern, cat(origin, ": pre_tokenizer"));
    }
    pre_tokenizers.push_back(std::move(p));
  }
  if (d.decoders) {
    decoders.emplace();
    for (const td::DecoderDesc& desc : *d.decoders) {
      td::DecoderStep step{desc, nullptr};
      if (desc.kind == td::DecoderDesc::Kind::replace) {
        step.pattern = std::make_shared<td::Pattern>(desc.pattern, cat(origin, ": decoder"));
      }
      decoders->push_back(std::move(step));
    }
  }
  templates = d.templates;

  // The id space: the model's vocabulary, then the added tokens, whose ids tokenizers assigns
  // (AddedVocabulary::add_tokens): a content already known keeps its id, a new one takes the
  // next id after the vocabulary and the added tokens so far.
  const td::TokenMap& vocab = model->vocab();
  int64_t size = 0;
  for (const auto& [token, id] : vocab) size = std::max<int64_t>(size, int64_t{id} + 1);
  const auto model_vocab_size = static_cast<int64_t>(vocab.size());
  std::optional<int64_t> max_added;
  std::vector<std::pair<td::AddedTokenDesc, int32_t>> added;
  for (const td::AddedTokenDesc& token : d.added_tokens) {
    if (token.content.empty()) continue;
    int64_t id = 0;
    if (const auto it = added_ids.find(token.content); it != added_ids.end()) {
      id = it->second;
    } else if (const auto v = vocab.find(token.content); v != vocab.end()) {
      id = v->second;
    } else if (!max_added) {
      id = model_vocab_size;
    } else {
      id = *max_added >= model_vocab_size || model_vocab_size == 0 ? *max_added + 1
                                                                   : model_vocab_size;
    }
    if (id > std::numeric_limits<int32_t>::max() - 1) {
      throw Error(kOp, cat(origin, ": added token ", text::in_quotes(token.content),
                           " gets an id past the int32 range"));
    }
    max_added = std::max(max_added.value_or(id), id);
    added_ids[token.content] = static_cast<int32_t>(id);
    added.emplace_back(token, static_cast<int32_t>(id));
    size = std::max(size, id + 1);
  }
  // The id -> token table spans the id space; a few holes are fine (tokenizers drops their ids
  // when decoding), but a file must not make a small vocabulary claim billions of ids.
  const auto n_tokens = static_cast<int64_t>(vocab.size() + added.size());
  if (size > 2 * n_tokens + 1024) {
    throw Error(kOp, cat(origin, ": ids reach ", size - 1, " for only ", n_tokens, " tokens"));
  }
  vocab_size = static_cast<int32_t>(size);
  tokens.assign(static_cast<size_t>(vocab_size), std::string());
  token_flags.assign(static_cast<size_t>(vocab_size), 0);
  for (const auto& [token, id] : vocab) {
    tokens[static_cast<size_t>(id)] = token;
    token_flags[static_cast<size_t>(id)] = kPresent;
  }
  for (const auto& [token, id] : added) {
    tokens[static_cast<size_t>(id)] = token.content;
    token_flags[static_cast<size_t>(id)] = kPresent;
  }
  // Specialness follows the content (tokenizers keeps a set of special contents); special
  // tokens go first into the matchers, as in AddedVocabulary::refresh_added_tokens.
  std::unordered_map<std::string, bool> special_content;
  for (const auto& [token, id] : added) special_content[token.content] |= token.special;
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& [token, id] : added) {
      if (token.special != (pass == 0)) continue;
      if (token.special) token_flags[static_cast<size_t>(id)] |= kSpecial;
      AddedToken entry{token.content,     id,           special_content[token.content],
                       token.single_word, token.lstrip, token.rstrip};
      if (token.normalized) {
        entry.content = normalize(token.content);
        if (!entry.content.empty()) normalized_added.tokens.push_back(std::move(entry));
      } else {
        raw_added.tokens.push_back(std::move(entry));
      }
    }
  }
  raw_added.build();
  normalized_added.build();

  for (const auto& items : templates) {
    for (const td::TemplateItem& item : items) {
      for (int32_t id : item.ids) {
        if (id < 0 || id >= vocab_size) {
          throw Error(kOp, cat(origin, ": post_processor special token id ", id,
                               " out of range [0, ", vocab_size, ")"));
        }
      }
    }
  }

  // BOS / EOS: the source's own ids; else the first special token before / after $A in the
  // templates; else the conventional names.
  std::optional<int32_t> template_bos, template_eos;
  for (const auto& items : templates) {
    bool after_sequence = false;
    for (const td::TemplateItem& item : items) {
      if (item.sequence) {
        after_sequence = true;
      } else if (!item.ids.empty()) {
        auto& target = after_sequence ? template_eos : template_bos;
        if (!target) target = item.ids.front();
      }
    }
  }
  bos = d.bos_id ? d.bos_id : template_bos;
  eos = d.eos_id ? d.eos_id : template_eos;
  const auto find_any = [this](std::initializer_list<std::string_view> names) {
    for (std::string_view name : names) {
      if (const auto it = added_ids.find(name); it != added_ids.end()) {
        return std::optional<int32_t>(it->second);
      }
      if (const auto it = model->vocab().find(name); it != model->vocab().end()) {
        return std::optional<int32_t>(it->second);
      }
    }
    return std::optional<int32_t>();
  };
  if (!bos) bos = find_any({"<s>", "<|begin_of_text|>", "<bos>"});
  if (!eos) eos = find_any({"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>"});
  for (const std::optional<int32_t>& id : {bos, eos}) {
    if (id && (*id < 0 || *id >= vocab_size)) {
      throw Error(kOp, cat(origin, ": BOS/EOS id ", *id, " out of range [0, ", vocab_size, ")"));
    }
  }
}

std::vector<int32_t> Tokenizer::Impl::encode(std::string_view text,
                                             const EncodeOptions& options) const {
  size_t bad = 0;
  if (!io::json_util::valid_utf8(text, &bad)) {
    throw Error(kOp, cat("encode: the text is not valid UTF-8 (byte ", bad, ")"));
  }
  // 1. Added tokens in the raw text; 2. the rest normalized, then the normalized added tokens.
  std::vector<Piece> pieces;
  if (!text.empty())
    split_added(raw_added, Piece{std::string(text), true}, options.parse_special, pieces);
  std::vector<Piece> normalized;
  for (Piece& piece : pieces) {
    if (piece.id >= 0) {
      normalized.push_back(std::move(piece));
      continue;
    }
    Piece n{normalize(piece.text), piece.at_origin};
    if (n.text.empty()) continue;
    split_added(normalized_added, n, options.parse_special, normalized);
  }
  // 3. Pre-tokenizers, each over every piece; 4. the model on each pre-token.
  std::vector<int32_t> ids;
  std::vector<Piece> current, next;
  for (Piece& piece : normalized) {
    if (piece.id >= 0) {
      ids.push_back(piece.id);
      continue;
    }
    current.clear();
    current.push_back(std::move(piece));
    for (const PreTokenizer& step : pre_tokenizers) {
      next.clear();
      for (const Piece& p : current) pre_tokenize(step, p, next);
      std::swap(current, next);
    }
    for (const Piece& p : current) model->tokenize(p.text, ids);
  }
  // 5. The post-processor.
  if (!options.add_special) return ids;
  for (const auto& items : templates) {
    std::vector<int32_t> out;
    out.reserve(ids.size() + items.size());
    for (const td::TemplateItem& item : items) {
      if (item.sequence) {
        out.insert(out.end(), ids.begin(), ids.end());
      } else {
        out.insert(out.end(), item.ids.begin(), item.ids.end());
      }
    }
    ids = std::move(out);
  }
  return ids;
}

// ---- Tokenizer ----

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_json(std::string_view json, const std::string& origin) {
  return Tokenizer(std::make_unique<Impl>(td::parse_tokenizer_json(json, origin)));
}

Tokenizer Tokenizer::from_json_file(const std::string& path) {
  const io::MappedFile file(path, kOp);
  const auto bytes = file.bytes();
  return from_json(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                   path);
}

Tokenizer Tokenizer::from_gguf(const io::GgufFile& file) {
  return Tokenizer(std::make_unique<Impl>(td::describe_gguf(file)));
}

Tokenizer Tokenizer::from_model_path(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path json = fs::path(path) / "tokenizer.json";
    if (!fs::is_regular_file(json, ec)) {
      throw Error(kOp, cat(path, ": the directory has no tokenizer.json"));
    }
    return from_json_file(json.string());
  }
  if (!fs::exists(path, ec)) throw Error(kOp, cat(path, ": no such file or directory"));
  if (std::string_view(path).ends_with(".gguf")) return from_gguf(io::GgufFile::open(path));
  return from_json_file(path);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  return impl_->encode(text, options);
}

namespace {

void check_id(const Tokenizer::Impl& impl, int32_t id, const char* what) {
  if (id < 0 || id >= impl.vocab_size) {
    throw Error(kOp, cat(what, ": id ", id, " out of range [0, ", impl.vocab_size, ")"));
  }
}

// decode()'s view of one id: its string, or nothing when it is skipped (a special token under
// skip_special, or an id without a token, which tokenizers drops).
const std::string* decode_token(const Tokenizer::Impl& impl, int32_t id,
                                const DecodeOptions& options) {
  check_id(impl, id, "decode");
  const uint8_t flags = impl.token_flags[static_cast<size_t>(id)];
  if (!(flags & Tokenizer::Impl::kPresent)) return nullptr;
  if (options.skip_special && (flags & Tokenizer::Impl::kSpecial)) return nullptr;
  return &impl.tokens[static_cast<size_t>(id)];
}

}  // namespace

std::string Tokenizer::decode(std::span<const int32_t> ids, const DecodeOptions& options) const {
  for (int32_t id : ids) check_id(*impl_, id, "decode");
  td::DecodeChain chain(impl_->decoders);
  for (int32_t id : ids) {
    if (const std::string* token = decode_token(*impl_, id, options)) chain.push(*token);
  }
  chain.finish();
  return chain.take();
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) {
    return it->second;
  }
  if (const auto it = impl_->model->vocab().find(token); it != impl_->model->vocab().end()) {
    return it->second;
  }
  return std::nullopt;
}

const std::string& Tokenizer::id_to_token(int32_t id) const {
  check_id(*impl_, id, "id_to_token");
  if (!(impl_->token_flags[static_cast<size_t>(id)] & Impl::kPresent)) {
    throw Error(kOp, cat("id_to_token: id ", id, " has no token in ", impl_->origin));
  }
  return impl_->tokens[static_cast<size_t>(id)];
}

bool Tokenizer::is_special(int32_t id) const {
  check_id(*impl_, id, "is_special");
  return (impl_->token_flags[static_cast<size_t>(id)] & Impl::kSpecial) != 0;
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return impl_->eos; }

// ---- StreamingDecoder ----

StreamingDecoder::StreamingDecoder(const Tokenizer& tokenizer, const DecodeOptions& options)
    : tokenizer_(tokenizer),
      options_(options),
      chain_(std::make_unique<td::DecodeChain>(tokenizer.impl_->decoders)) {}

StreamingDecoder::StreamingDecoder(StreamingDecoder&&) noexcept = default;
StreamingDecoder::~StreamingDecoder() = default;

std::string StreamingDecoder::push(int32_t id) {
  if (const std::string* token = decode_token(*tokenizer_.impl_, id, options_))
    chain_->push(*token);
  return chain_->take();
}

std::string StreamingDecoder::finish() {
  chain_->finish();
  return chain_->take();
}

}  // namespace mlxn
