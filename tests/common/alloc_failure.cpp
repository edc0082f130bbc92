// SPDX-License-Identifier: BSD-3-Clause
#include "alloc_failure.hpp"

#include <cstdlib>
#include <new>

namespace {
// Allocations this thread may still make before the failing one; -1: none
// is armed. -2: it has happened.
thread_local long t_countdown = -1;

bool should_fail() {
  if (t_countdown < 0) return false;
  if (t_countdown-- > 0) return false;
  t_countdown = -2;
  return true;
}

void* allocate(std::size_t n) {
  if (should_fail()) return nullptr;
  return std::malloc(n ? n : 1);
}

void* allocate_aligned(std::size_t n, std::align_val_t a) {
  if (should_fail()) return nullptr;
  const auto al = static_cast<std::size_t>(a);
  // aligned_alloc wants a size that is a multiple of the alignment.
  return std::aligned_alloc(al, n == 0 ? al : (n + al - 1) / al * al);
}
} // namespace

namespace nbdtest {
AllocFailure::AllocFailure(long n) { t_countdown = n; }
AllocFailure::~AllocFailure() { t_countdown = -1; }
bool AllocFailure::happened() const { return t_countdown == -2; }
} // namespace nbdtest

void* operator new(std::size_t n) {
  if (void* p = allocate(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate(n); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = allocate_aligned(n, a)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return ::operator new(n, a); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate_aligned(n, a);
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate_aligned(n, a);
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
