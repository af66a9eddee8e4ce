#include "tokenizer/bpe_model.h"

#include <queue>

#include "common/error.h"
#include "tokenizer/utf8.h"

namespace tandem::tok {

namespace {

std::string byte_token_text(uint8_t b) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  return std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">";
}

}  // namespace

BpeModel::BpeModel(const StringIdMap& token_to_id,
                   const std::vector<std::pair<std::string, std::string>>& merges,
                   const BpeOptions& options)
    : token_to_id_(token_to_id), options_(options) {
  byte_ids_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    const std::string text =
        options_.byte_level ? alphabet_.encode(static_cast<uint8_t>(b)) : byte_token_text(static_cast<uint8_t>(b));
    if (auto id = find_id(token_to_id_, text)) byte_ids_[b] = *id;
  }
  if (options_.byte_level && options_.ignore_merges) {
    raw_token_to_id_.reserve(token_to_id_.size());
    for (const auto& [text, id] : token_to_id_) {
      std::string raw;
      alphabet_.decode_append(text, raw);
      raw_token_to_id_.emplace(std::move(raw), id);
    }
  }
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const auto id_a = find_id(token_to_id_, a);
    const auto id_b = find_id(token_to_id_, b);
    const auto id_ab = find_id(token_to_id_, a + b);
    if (!id_a || !id_b || !id_ab)
      throw Error("merge " + std::to_string(rank) + " ('" + a + "' '" + b +
                  "') uses a token that is not in the vocabulary");
    // The first (lowest-rank) occurrence of a pair wins.
    merges_.try_emplace(pair_key(*id_a, *id_b), Merge{static_cast<int32_t>(rank), *id_ab});
  }
}

void BpeModel::initial_symbols(std::string_view piece, std::vector<int32_t>& symbols) const {
  symbols.clear();
  if (options_.byte_level) {
    for (char c : piece) {
      const int32_t id = byte_ids_[static_cast<uint8_t>(c)];
      if (id >= 0) {
        symbols.push_back(id);
      } else if (options_.unk_id) {
        symbols.push_back(*options_.unk_id);
      }
    }
    return;
  }
  bool last_was_unk = false;
  size_t pos = 0;
  while (pos < piece.size()) {
    const size_t start = pos;
    size_t len = utf8_sequence_length(piece, pos);
    if (len == 0) len = 1;  // an ill-formed byte stands alone
    pos += len;
    const std::string_view ch = piece.substr(start, len);
    if (auto id = find_id(token_to_id_, ch)) {
      symbols.push_back(*id);
      last_was_unk = false;
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (char c : ch) symbols.push_back(byte_ids_[static_cast<uint8_t>(c)]);
        last_was_unk = false;
        continue;
      }
    }
    if (!options_.unk_id) continue;  // no unknown token: the character is dropped
    if (options_.fuse_unk && last_was_unk) continue;
    symbols.push_back(*options_.unk_id);
    last_was_unk = true;
  }
}

void BpeModel::apply_merges(std::vector<int32_t>& symbols) const {
  // Quadratic scan: fastest for the short pieces that make up most text.
  while (symbols.size() > 1) {
    const Merge* best = nullptr;
    size_t best_pos = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const Merge* m = find_merge(symbols[i], symbols[i + 1]);
      if (m != nullptr && (best == nullptr || m->rank < best->rank)) {
        best = m;
        best_pos = i;
      }
    }
    if (best == nullptr) break;
    symbols[best_pos] = best->id;
    symbols.erase(symbols.begin() + static_cast<std::ptrdiff_t>(best_pos) + 1);
  }
}

void BpeModel::apply_merges_long(std::vector<int32_t>& symbols) const {
  // Linked list of symbols plus a min-heap of candidate merges keyed by
  // (rank, position); stale candidates are skipped when popped.
  const size_t n = symbols.size();
  std::vector<int32_t> prev(n), next(n);  // -1 / n mark the ends
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = static_cast<int32_t>(i + 1);
  }
  struct Candidate {
    int32_t rank;
    int32_t pos;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = next[left];
    if (right >= static_cast<int32_t>(n)) return;
    if (const Merge* m = find_merge(symbols[left], symbols[right])) heap.push({m->rank, left});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int32_t>(i));
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    if (!alive[c.pos]) continue;
    const int32_t right = next[c.pos];
    if (right >= static_cast<int32_t>(n)) continue;
    const Merge* m = find_merge(symbols[c.pos], symbols[right]);
    if (m == nullptr || m->rank != c.rank) continue;  // the pair changed since
    symbols[c.pos] = m->id;
    alive[right] = false;
    next[c.pos] = next[right];
    if (next[right] < static_cast<int32_t>(n)) prev[next[right]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  size_t out = 0;
  for (int32_t i = 0; i < static_cast<int32_t>(n); i = next[i]) symbols[out++] = symbols[i];
  symbols.resize(out);
}

void BpeModel::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (options_.ignore_merges) {
    const auto id = options_.byte_level ? find_id(raw_token_to_id_, piece) : find_id(token_to_id_, piece);
    if (id) {
      out.push_back(*id);
      return;
    }
  }
  const bool cacheable = piece.size() <= kCacheMaxPiece;
  if (cacheable) {
    std::shared_lock lock(cache_mutex_);
    if (auto it = cache_.find(piece); it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> symbols;
  initial_symbols(piece, symbols);
  if (symbols.size() > 48) {
    apply_merges_long(symbols);
  } else {
    apply_merges(symbols);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
  if (cacheable) {
    std::unique_lock lock(cache_mutex_);
    if (cache_.size() >= kCacheLimit) cache_.clear();
    cache_.emplace(std::string(piece), std::move(symbols));
  }
}

}  // namespace tandem::tok
