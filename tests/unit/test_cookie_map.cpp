// SPDX-License-Identifier: BSD-3-Clause

#include "proto/cookie_map.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <unordered_map>
#include <vector>

using nbd::proto::CookieMap;

namespace {

// The map's hash, to build keys that collide on purpose (same home bucket
// in a table of a given size).
std::size_t home(std::uint64_t cookie, std::size_t table) {
  return static_cast<std::size_t>((cookie * 0x9e3779b97f4a7c15ull) >> 32) & (table - 1);
}

std::vector<std::uint64_t> colliding_keys(std::size_t n, std::size_t table, std::size_t bucket,
                                          std::uint64_t from = 1) {
  std::vector<std::uint64_t> keys;
  for (std::uint64_t k = from; keys.size() < n; ++k)
    if (home(k, table) == bucket) keys.push_back(k);
  return keys;
}

void check_against(const CookieMap& m, const std::unordered_map<std::uint64_t, std::uint32_t>& o,
                   std::uint64_t key_limit) {
  REQUIRE(m.size() == o.size());
  for (const auto& kv : o) {
    const std::uint64_t k = kv.first;
    CAPTURE(k);
    REQUIRE(m.find(k) == kv.second);
  }
  for (std::uint64_t k = 1; k <= key_limit; ++k)
    if (!o.count(k)) {
      CAPTURE(k);
      REQUIRE(m.find(k) == CookieMap::npos);
    }
}

} // namespace

TEST_SUITE("cookie_map") {

TEST_CASE("cookie_map: empty map finds nothing and erases nothing") {
  CookieMap m;
  CHECK(m.size() == 0);
  CHECK(m.find(1) == CookieMap::npos);
  CHECK(m.find(0xffffffffffffffff) == CookieMap::npos);
  m.erase(1);
  CHECK(m.size() == 0);
}

TEST_CASE("cookie_map: insert, find, erase") {
  CookieMap m;
  m.insert(1, 10);
  m.insert(2, 20);
  m.insert(0xffffffffffffffff, 30);
  CHECK(m.size() == 3);
  CHECK(m.find(1) == 10);
  CHECK(m.find(2) == 20);
  CHECK(m.find(0xffffffffffffffff) == 30);
  CHECK(m.find(3) == CookieMap::npos);
  m.erase(2);
  CHECK(m.size() == 2);
  CHECK(m.find(2) == CookieMap::npos);
  CHECK(m.find(1) == 10);
  m.erase(2); // already gone: no effect
  CHECK(m.size() == 2);
  m.erase(12345); // never there
  CHECK(m.size() == 2);
  m.erase(1);
  m.erase(0xffffffffffffffff);
  CHECK(m.size() == 0);
  CHECK(m.find(1) == CookieMap::npos);
}

TEST_CASE("cookie_map: cookie 0 (the empty marker) is never found") {
  // A server replying with cookie 0 must not be matched to an empty
  // bucket (nor to a slot left behind in one by an erase).
  CookieMap m;
  for (std::uint64_t k = 1; k <= 20; ++k) m.insert(k, static_cast<std::uint32_t>(k));
  for (std::uint64_t k = 1; k <= 20; k += 3) m.erase(k);
  CHECK(m.find(0) == CookieMap::npos);
  const auto before = m.size();
  m.erase(0);
  CHECK(m.size() == before);
  for (std::uint64_t k = 1; k <= 20; ++k)
    CHECK(m.find(k) == ((k - 1) % 3 == 0 ? CookieMap::npos : k));
}

TEST_CASE("cookie_map: slot values up to npos - 1") {
  CookieMap m;
  m.insert(5, 0);
  m.insert(6, CookieMap::npos - 1);
  CHECK(m.find(5) == 0);
  CHECK(m.find(6) == CookieMap::npos - 1);
}

TEST_CASE("cookie_map: many increasing keys, as the engine hands them out") {
  CookieMap m;
  for (std::uint64_t k = 1; k <= 10000; ++k) m.insert(k, static_cast<std::uint32_t>(k * 3));
  CHECK(m.size() == 10000);
  for (std::uint64_t k = 1; k <= 10000; ++k) REQUIRE(m.find(k) == k * 3);
  CHECK(m.find(10001) == CookieMap::npos);
  for (std::uint64_t k = 1; k <= 10000; k += 2) m.erase(k);
  CHECK(m.size() == 5000);
  for (std::uint64_t k = 1; k <= 10000; ++k)
    REQUIRE(m.find(k) == (k % 2 ? CookieMap::npos : k * 3));
}

TEST_CASE("cookie_map: growth keeps every entry (across several doublings)") {
  CookieMap m;
  std::unordered_map<std::uint64_t, std::uint32_t> o;
  std::mt19937_64 rng(7);
  for (int i = 0; i < 5000; ++i) {
    std::uint64_t k = rng() | 1; // never 0
    if (o.count(k)) continue;
    m.insert(k, static_cast<std::uint32_t>(i));
    o[k] = static_cast<std::uint32_t>(i);
    // Check around each power of two, where the table grows.
    if ((o.size() & (o.size() - 1)) == 0 || o.size() == 33 || o.size() == 65) {
      for (const auto& [kk, v] : o) REQUIRE(m.find(kk) == v);
    }
  }
  CHECK(m.size() == o.size());
  for (const auto& [kk, v] : o) REQUIRE(m.find(kk) == v);
}

TEST_CASE("cookie_map: a sliding window of cookies (insert new, erase old)") {
  // The steady state of a busy connection: 100 commands in flight, the
  // oldest finishing as new ones start; the table must not fill up with
  // tombstones or grow without bound in behaviour.
  CookieMap m;
  for (std::uint64_t k = 1; k <= 200000; ++k) {
    m.insert(k, static_cast<std::uint32_t>(k % 1000));
    if (k > 100) m.erase(k - 100);
    REQUIRE(m.size() == std::min<std::uint64_t>(k, 100));
  }
  for (std::uint64_t k = 199901; k <= 200000; ++k) REQUIRE(m.find(k) == k % 1000);
  CHECK(m.find(199900) == CookieMap::npos);
}

TEST_CASE("cookie_map: erase at the start, middle and end of a probe run") {
  // Keys with the same home bucket in the initial 64-bucket table form one
  // probe run; removing any of them must keep the others findable.
  for (std::size_t victim = 0; victim < 6; ++victim) {
    CAPTURE(victim);
    auto keys = colliding_keys(6, 64, 5);
    CookieMap m;
    for (std::size_t i = 0; i < keys.size(); ++i) m.insert(keys[i], static_cast<std::uint32_t>(i));
    m.erase(keys[victim]);
    CHECK(m.size() == 5);
    for (std::size_t i = 0; i < keys.size(); ++i)
      CHECK(m.find(keys[i]) == (i == victim ? CookieMap::npos : i));
    // Re-insert and find again.
    m.insert(keys[victim], 99);
    for (std::size_t i = 0; i < keys.size(); ++i)
      CHECK(m.find(keys[i]) == (i == victim ? 99 : i));
  }
}

TEST_CASE("cookie_map: erase in interleaved probe runs and across the table's end") {
  // Runs homed at the last buckets wrap around to bucket 0; runs homed at
  // 0 and 1 then interleave with them.
  std::vector<std::uint64_t> keys;
  for (std::size_t b : {62u, 63u, 0u, 1u}) {
    auto k = colliding_keys(3, 64, b);
    keys.insert(keys.end(), k.begin(), k.end());
  }
  for (std::size_t victim = 0; victim < keys.size(); ++victim) {
    CAPTURE(victim);
    CookieMap m;
    std::unordered_map<std::uint64_t, std::uint32_t> o;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      m.insert(keys[i], static_cast<std::uint32_t>(i));
      o[keys[i]] = static_cast<std::uint32_t>(i);
    }
    m.erase(keys[victim]);
    o.erase(keys[victim]);
    REQUIRE(m.size() == o.size());
    for (const auto& [k, v] : o) REQUIRE(m.find(k) == v);
    CHECK(m.find(keys[victim]) == CookieMap::npos);
  }
}

TEST_CASE("cookie_map: randomised against std::unordered_map") {
  for (std::uint64_t seed : {1u, 2u, 3u, 4u}) {
    CAPTURE(seed);
    std::mt19937_64 rng(seed);
    // A small key space makes long probe runs and frequent hits.
    const std::uint64_t key_limit = seed % 2 ? 300 : 3000;
    CookieMap m;
    std::unordered_map<std::uint64_t, std::uint32_t> o;
    for (int step = 0; step < 40000; ++step) {
      std::uint64_t k = 1 + rng() % key_limit;
      switch (rng() % 3) {
      case 0:
      case 1:
        if (!o.count(k)) {
          auto v = static_cast<std::uint32_t>(rng() % 100000);
          m.insert(k, v);
          o[k] = v;
        }
        break;
      case 2:
        m.erase(k);
        o.erase(k);
        break;
      }
      if (step % 997 == 0) check_against(m, o, key_limit);
    }
    check_against(m, o, key_limit);
    // Empty it completely.
    std::vector<std::uint64_t> left;
    for (const auto& [k, v] : o) left.push_back(k);
    std::shuffle(left.begin(), left.end(), rng);
    for (auto k : left) {
      m.erase(k);
      o.erase(k);
    }
    check_against(m, o, key_limit);
  }
}

TEST_CASE("cookie_map: randomised with colliding keys only") {
  // Every key homes to one of two neighbouring buckets in a 64-slot table,
  // so all operations happen in one long run (until the table grows).
  auto a = colliding_keys(20, 64, 10);
  auto b = colliding_keys(20, 64, 11);
  std::vector<std::uint64_t> pool(a);
  pool.insert(pool.end(), b.begin(), b.end());
  std::mt19937_64 rng(99);
  CookieMap m;
  std::unordered_map<std::uint64_t, std::uint32_t> o;
  for (int step = 0; step < 20000; ++step) {
    std::uint64_t k = pool[rng() % pool.size()];
    if (rng() % 2 && !o.count(k) && o.size() < 30) {
      m.insert(k, static_cast<std::uint32_t>(step));
      o[k] = static_cast<std::uint32_t>(step);
    } else {
      m.erase(k);
      o.erase(k);
    }
    REQUIRE(m.size() == o.size());
    for (auto kk : pool) {
      auto it = o.find(kk);
      REQUIRE(m.find(kk) == (it == o.end() ? CookieMap::npos : it->second));
    }
  }
}

} // TEST_SUITE
