// The models: BPE as `tokenizers` runs it (merges by rank through a priority queue, byte
// fallback, unk fusing, ignore_merges) and SentencePiece BPE by scores as llama.cpp runs a GGUF
// "llama" vocabulary.
#include <cstdio>
#include <mutex>
#include <optional>
#include <queue>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "mlxn/core/error.h"
#include "tokenizer/tokenizer_impl.h"

namespace mlxn::tokenizer_detail {

namespace {

// "<0x0A>": the byte tokens of byte_fallback and SentencePiece, as Rust's "{:#04X}" writes them.
std::string byte_token(uint8_t byte) {
  char buffer[8];
  std::snprintf(buffer, sizeof(buffer), "<0x%02X>", byte);
  return buffer;
}

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

class BpeModel final : public Model {
 public:
  BpeModel(const BpeDesc& desc, const std::string& origin)
      : origin_(origin),
        unk_token_(desc.unk_token),
        fuse_unk_(desc.fuse_unk),
        byte_fallback_(desc.byte_fallback),
        ignore_merges_(desc.ignore_merges) {
    vocab_.reserve(desc.vocab.size());
    for (const auto& [token, id] : desc.vocab) vocab_.emplace(token, id);
    merges_.reserve(desc.merges.size());
    for (size_t rank = 0; rank < desc.merges.size(); ++rank) {
      const auto& [left, right] = desc.merges[rank];
      const int32_t left_id = lookup(left, rank, "token");
      const int32_t right_id = lookup(right, rank, "token");
      const int32_t merged_id = lookup(left + right, rank, "merged token");
      // A repeated pair takes its last rank, as the map tokenizers builds does.
      merges_[pair_key(left_id, right_id)] = {static_cast<uint32_t>(rank), merged_id};
    }
    for (int b = 0; b < 256; ++b) {
      const auto it = vocab_.find(byte_token(static_cast<uint8_t>(b)));
      byte_ids_[static_cast<size_t>(b)] = it == vocab_.end() ? -1 : it->second;
    }
  }

  void tokenize(std::string_view word, std::vector<int32_t>& out) const override {
    if (ignore_merges_) {
      if (const auto it = vocab_.find(word); it != vocab_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    const bool cacheable = word.size() < kMaxCachedWordBytes;
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      if (const auto it = cache_.find(word); it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    const size_t first = out.size();
    merge_word(word, out);
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      // Like tokenizers' cache: once full, new words are not kept (results never depend on it).
      if (cache_.size() < kCacheCapacity) {
        cache_.emplace(std::string(word), std::vector<int32_t>(out.begin() + first, out.end()));
      }
    }
  }

 private:
  static constexpr size_t kMaxCachedWordBytes = 256;
  static constexpr size_t kCacheCapacity = 10000;

  struct Symbol {
    int32_t id;
    int64_t prev;
    int64_t next;
    size_t len;  // bytes; 0 once merged into its left neighbour
  };
  struct Merge {
    size_t pos;
    uint32_t rank;
    int32_t new_id;
  };
  // Lowest rank first, then leftmost.
  struct MergeOrder {
    bool operator()(const Merge& a, const Merge& b) const {
      return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
    }
  };

  int32_t lookup(const std::string& token, size_t rank, const char* what) const {
    const auto it = vocab_.find(token);
    if (it == vocab_.end()) {
      throw Error(kOp, cat(origin_, ": model.merges[", rank, "]: ", what, " ",
                           text::in_quotes(token), " is not in the vocabulary"));
    }
    return it->second;
  }

  static void add_symbol(std::vector<Symbol>& symbols, int32_t id, size_t len) {
    const auto n = static_cast<int64_t>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, len});
  }

  int32_t unk_id() const {
    const auto it = vocab_.find(*unk_token_);
    if (it == vocab_.end()) {
      throw Error(kOp, cat(origin_, ": model.unk_token ", text::in_quotes(*unk_token_),
                           " is not in the vocabulary"));
    }
    return it->second;
  }

  const Merge* find_merge(int32_t left, int32_t right, Merge* slot, size_t pos) const {
    const auto it = merges_.find(pair_key(left, right));
    if (it == merges_.end()) return nullptr;
    *slot = {pos, it->second.first, it->second.second};
    return slot;
  }

  // BPE::merge_word, then Word::merge_all without dropout.
  void merge_word(std::string_view word, std::vector<int32_t>& out) const {
    std::vector<Symbol> symbols;
    symbols.reserve(word.size());
    // A pending unknown: fuse_unk extends it over consecutive unknown characters.
    bool unk = false;
    int32_t unk_token_id = 0;
    size_t unk_len = 0;
    for (size_t i = 0; i < word.size();) {
      const size_t len = utf8_length(static_cast<unsigned char>(word[i]));
      const std::string_view ch = word.substr(i, len);
      i += len;
      if (const auto it = vocab_.find(ch); it != vocab_.end()) {
        if (unk) add_symbol(symbols, unk_token_id, unk_len);
        unk = false;
        add_symbol(symbols, it->second, len);
        continue;
      }
      if (byte_fallback_) {
        bool all_bytes = true;
        for (char c : ch) all_bytes = all_bytes && byte_ids_[static_cast<uint8_t>(c)] >= 0;
        if (all_bytes) {
          // A pending unknown stays pending here: tokenizers adds it after these bytes.
          for (char c : ch) add_symbol(symbols, byte_ids_[static_cast<uint8_t>(c)], 1);
          continue;
        }
      }
      if (unk_token_) {
        if (unk && fuse_unk_) {
          unk_len += len;
        } else {
          if (unk) add_symbol(symbols, unk_token_id, unk_len);
          unk = true;
          unk_token_id = unk_id();
          unk_len = len;
        }
      }
      // Without an unk token an unknown character yields no token, as in tokenizers.
    }
    if (unk) add_symbol(symbols, unk_token_id, unk_len);

    std::priority_queue<Merge, std::vector<Merge>, MergeOrder> queue;
    Merge slot{};
    for (size_t pos = 0; pos + 1 < symbols.size(); ++pos) {
      if (find_merge(symbols[pos].id, symbols[pos + 1].id, &slot, pos)) queue.push(slot);
    }
    while (!queue.empty()) {
      const Merge top = queue.top();
      queue.pop();
      Symbol& current = symbols[top.pos];
      if (current.len == 0 || current.next == -1) continue;
      const auto next_pos = static_cast<size_t>(current.next);
      const Symbol right = symbols[next_pos];
      // An entry made stale by an earlier merge no longer names this pair's result.
      const auto it = merges_.find(pair_key(current.id, right.id));
      if (it == merges_.end() || it->second.second != top.new_id) continue;
      current.id = top.new_id;
      current.len += right.len;
      current.next = right.next;
      symbols[next_pos].len = 0;
      if (right.next > -1 && static_cast<size_t>(right.next) < symbols.size()) {
        symbols[static_cast<size_t>(right.next)].prev = static_cast<int64_t>(top.pos);
      }
      if (current.prev >= 0) {
        const auto prev = static_cast<size_t>(current.prev);
        if (find_merge(symbols[prev].id, current.id, &slot, prev)) queue.push(slot);
      }
      if (current.next >= 0 && static_cast<size_t>(current.next) < symbols.size()) {
        const auto next = static_cast<size_t>(current.next);
        if (find_merge(current.id, symbols[next].id, &slot, top.pos)) queue.push(slot);
      }
    }
    for (const Symbol& s : symbols) {
      if (s.len != 0) out.push_back(s.id);
    }
  }

  std::string origin_;
  std::optional<std::string> unk_token_;
  bool fuse_unk_;
  bool byte_fallback_;
  bool ignore_merges_;
  std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>> merges_;  // (rank, merged id)
  int32_t byte_ids_[256];
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

class SpmModel final : public Model {
 public:
  SpmModel(const SpmDesc& desc, const std::string& origin)
      : origin_(origin), scores_(desc.scores), unk_id_(desc.unk_id) {
    vocab_.reserve(desc.tokens.size());
    for (size_t id = 0; id < desc.tokens.size(); ++id) {
      // The first of two equal strings keeps the string -> id entry.
      vocab_.emplace(desc.tokens[id], static_cast<int32_t>(id));
    }
    for (int b = 0; b < 256; ++b) {
      const auto it = vocab_.find(byte_token(static_cast<uint8_t>(b)));
      byte_ids_[static_cast<size_t>(b)] = it == vocab_.end() ? -1 : it->second;
    }
  }

  void tokenize(std::string_view word, std::vector<int32_t>& out) const override {
    struct Symbol {
      size_t start;
      size_t n;  // bytes; 0 once merged into its left neighbour
      int64_t prev;
      int64_t next;
    };
    struct Bigram {
      int64_t left;
      int64_t right;
      float score;
      size_t size;
    };
    // Highest score first, then leftmost (llama.cpp's llm_bigram_spm::comparator).
    struct BigramOrder {
      bool operator()(const Bigram& a, const Bigram& b) const {
        return a.score < b.score || (a.score == b.score && a.left > b.left);
      }
    };
    std::vector<Symbol> symbols;
    for (size_t i = 0; i < word.size();) {
      const size_t len = utf8_length(static_cast<unsigned char>(word[i]));
      const auto index = static_cast<int64_t>(symbols.size());
      symbols.push_back({i, len, index - 1, -1});
      if (index > 0) symbols[static_cast<size_t>(index - 1)].next = index;
      i += len;
    }
    std::priority_queue<Bigram, std::vector<Bigram>, BigramOrder> queue;
    const auto try_add = [&](int64_t left, int64_t right) {
      if (left < 0 || right < 0) return;
      const Symbol& l = symbols[static_cast<size_t>(left)];
      const Symbol& r = symbols[static_cast<size_t>(right)];
      const auto it = vocab_.find(word.substr(l.start, l.n + r.n));
      if (it == vocab_.end()) return;
      queue.push({left, right, scores_[static_cast<size_t>(it->second)], l.n + r.n});
    };
    for (size_t i = 1; i < symbols.size(); ++i) {
      try_add(static_cast<int64_t>(i - 1), static_cast<int64_t>(i));
    }
    while (!queue.empty()) {
      const Bigram bigram = queue.top();
      queue.pop();
      Symbol& left = symbols[static_cast<size_t>(bigram.left)];
      Symbol& right = symbols[static_cast<size_t>(bigram.right)];
      if (left.n == 0 || right.n == 0 || left.n + right.n != bigram.size) continue;
      left.n += right.n;
      right.n = 0;
      left.next = right.next;
      if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = bigram.left;
      try_add(left.prev, bigram.left);
      try_add(bigram.left, left.next);
    }
    for (int64_t i = symbols.empty() ? -1 : 0; i != -1; i = symbols[static_cast<size_t>(i)].next) {
      const Symbol& s = symbols[static_cast<size_t>(i)];
      const std::string_view piece = word.substr(s.start, s.n);
      // A merged symbol is a token by construction; a lone character may not be, and then
      // becomes its bytes.
      if (const auto it = vocab_.find(piece); it != vocab_.end()) {
        out.push_back(it->second);
        continue;
      }
      for (char c : piece) {
        const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
        if (id >= 0) {
          out.push_back(id);
        } else if (unk_id_) {
          out.push_back(*unk_id_);
        } else {
          throw Error(kOp, cat(origin_, ": no token for byte ", byte_token(static_cast<uint8_t>(c)),
                               " and no unknown token"));
        }
      }
    }
  }

 private:
  std::string origin_;
  std::vector<float> scores_;
  std::optional<int32_t> unk_id_;
  int32_t byte_ids_[256];
};

}  // namespace

std::unique_ptr<Model> make_bpe_model(const BpeDesc& desc, const std::string& origin) {
  return std::make_unique<BpeModel>(desc, origin);
}

std::unique_ptr<Model> make_spm_model(const SpmDesc& desc, const std::string& origin) {
  return std::make_unique<SpmModel>(desc, origin);
}

}  // namespace mlxn::tokenizer_detail
