// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// Makes one heap allocation fail, to test what the library does when it
// runs out of memory. Only for a test executable of its own:
// alloc_failure.cpp replaces the global operator new and delete (all
// forms, with malloc and free underneath, so sanitizers still see every
// block and every leak).

namespace nbdtest {

/// While it lives, the allocation number `n` (0: the next one) made by
/// this thread through operator new fails: std::bad_alloc, or nullptr from
/// the nothrow forms. Later allocations succeed again.
class AllocFailure {
public:
  explicit AllocFailure(long n);
  ~AllocFailure();
  AllocFailure(const AllocFailure&) = delete;
  AllocFailure& operator=(const AllocFailure&) = delete;
  /// Whether the failure has happened.
  bool happened() const;
};

} // namespace nbdtest
