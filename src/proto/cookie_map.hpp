// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <cstdint>
#include <vector>

namespace nbd::proto {

// Maps a 64-bit cookie to a command slot. Open addressing with linear
// probing and backward-shift deletion: no allocation per insert once the
// table has grown to the number of commands in flight, which a node-based
// std::unordered_map would not give us.
class CookieMap {
public:
  static constexpr std::uint32_t npos = 0xffffffff;

  std::uint32_t find(std::uint64_t cookie) const {
    // 0 marks empty buckets: a server's reply with cookie 0 must not match one.
    if (keys_.empty() || cookie == empty) return npos;
    for (std::size_t i = index(cookie);; i = (i + 1) & mask()) {
      if (keys_[i] == cookie) return values_[i];
      if (keys_[i] == empty) return npos;
    }
  }

  void insert(std::uint64_t cookie, std::uint32_t slot) {
    if ((size_ + 1) * 2 > keys_.size()) grow();
    std::size_t i = index(cookie);
    while (keys_[i] != empty) i = (i + 1) & mask();
    keys_[i] = cookie;
    values_[i] = slot;
    ++size_;
  }

  void erase(std::uint64_t cookie) {
    if (keys_.empty() || cookie == empty) return;
    std::size_t i = index(cookie);
    while (keys_[i] != cookie) {
      if (keys_[i] == empty) return;
      i = (i + 1) & mask();
    }
    // Shift later members of the probe run back so lookups stay correct.
    std::size_t j = i;
    for (;;) {
      j = (j + 1) & mask();
      if (keys_[j] == empty) break;
      std::size_t home = index(keys_[j]);
      bool between = i <= j ? (i < home && home <= j) : (i < home || home <= j);
      if (between) continue;
      keys_[i] = keys_[j];
      values_[i] = values_[j];
      i = j;
    }
    keys_[i] = empty;
    --size_;
  }

  std::size_t size() const { return size_; }

private:
  // Cookie 0 is never handed out, so it can mark an empty bucket.
  static constexpr std::uint64_t empty = 0;

  std::size_t mask() const { return keys_.size() - 1; }
  std::size_t index(std::uint64_t cookie) const {
    return static_cast<std::size_t>((cookie * 0x9e3779b97f4a7c15ull) >> 32) & mask();
  }
  void grow() {
    std::vector<std::uint64_t> old_keys(keys_.empty() ? 64 : keys_.size() * 2, empty);
    std::vector<std::uint32_t> old_values(old_keys.size());
    old_keys.swap(keys_);
    old_values.swap(values_);
    size_ = 0;
    for (std::size_t i = 0; i < old_keys.size(); ++i)
      if (old_keys[i] != empty) insert(old_keys[i], old_values[i]);
  }

  std::vector<std::uint64_t> keys_;
  std::vector<std::uint32_t> values_;
  std::size_t size_ = 0;
};

} // namespace nbd::proto
