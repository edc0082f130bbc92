// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace nbd {

template <typename Signature>
class Callback;

/// A move-only, type-erased callable that stores small callables (up to
/// 48 bytes of captures, the common case of a few pointers) in place, so
/// queueing a command with a lambda does not allocate. Larger callables
/// go to the heap. The stored callable's destructor runs exactly once: when
/// the Callback is destroyed or reset, which nbdcpp does as soon as it will
/// never call it again (libnbd's .free).
template <typename R, typename... Args>
class Callback<R(Args...)> {
public:
  /// An empty callback (no callable): nbdcpp then calls nothing.
  Callback() noexcept = default;
  /// An empty callback, so that `{}` and `nullptr` both say "none".
  Callback(std::nullptr_t) noexcept {}

  /// Stores any callable invocable as R(Args...), e.g. a lambda.

  template <typename F,
            typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, Callback> &&
                                        std::is_invocable_r_v<R, std::decay_t<F>&, Args...>>>
  Callback(F&& f) { // NOLINT: implicit on purpose, so lambdas convert
    using Fn = std::decay_t<F>;
    if constexpr (sizeof(Fn) <= inline_size && alignof(Fn) <= alignof(std::max_align_t) &&
                  std::is_nothrow_move_constructible_v<Fn>) {
      ::new (static_cast<void*>(storage_)) Fn(std::forward<F>(f));
      ops_ = &inline_ops<Fn>;
    } else {
      *reinterpret_cast<Fn**>(storage_) = new Fn(std::forward<F>(f));
      ops_ = &heap_ops<Fn>;
    }
  }

  /// Takes o's callable; o becomes empty.
  Callback(Callback&& o) noexcept : ops_(o.ops_) {
    if (ops_) ops_->move(o.storage_, storage_);
    o.ops_ = nullptr;
  }
  /// Destroys the stored callable, then takes o's; o becomes empty.
  Callback& operator=(Callback&& o) noexcept {
    if (this != &o) {
      reset();
      ops_ = o.ops_;
      if (ops_) ops_->move(o.storage_, storage_);
      o.ops_ = nullptr;
    }
    return *this;
  }
  Callback(const Callback&) = delete;
  Callback& operator=(const Callback&) = delete;
  ~Callback() { reset(); }

  /// Destroys the stored callable, if any.
  void reset() noexcept {
    if (ops_) {
      auto* ops = ops_;
      ops_ = nullptr;
      ops->destroy(storage_);
    }
  }

  /// True when a callable is stored.
  explicit operator bool() const noexcept { return ops_ != nullptr; }

  /// Calls the stored callable (which must exist).
  R operator()(Args... args) const { return ops_->call(storage_, std::forward<Args>(args)...); }

private:
  static constexpr std::size_t inline_size = 48;

  struct Ops {
    R (*call)(const unsigned char*, Args&&...);
    void (*move)(unsigned char* from, unsigned char* to) noexcept;
    void (*destroy)(unsigned char*) noexcept;
  };

  template <typename Fn>
  static Fn& inline_obj(const unsigned char* s) {
    return *std::launder(reinterpret_cast<Fn*>(const_cast<unsigned char*>(s)));
  }
  template <typename Fn>
  static Fn& heap_obj(const unsigned char* s) {
    return **reinterpret_cast<Fn* const*>(s);
  }

  template <typename Fn>
  static constexpr Ops inline_ops = {
      [](const unsigned char* s, Args&&... a) -> R {
        return static_cast<R>(inline_obj<Fn>(s)(std::forward<Args>(a)...));
      },
      [](unsigned char* from, unsigned char* to) noexcept {
        ::new (static_cast<void*>(to)) Fn(std::move(inline_obj<Fn>(from)));
        inline_obj<Fn>(from).~Fn();
      },
      [](unsigned char* s) noexcept { inline_obj<Fn>(s).~Fn(); },
  };
  template <typename Fn>
  static constexpr Ops heap_ops = {
      [](const unsigned char* s, Args&&... a) -> R {
        return static_cast<R>(heap_obj<Fn>(s)(std::forward<Args>(a)...));
      },
      [](unsigned char* from, unsigned char* to) noexcept {
        *reinterpret_cast<Fn**>(to) = *reinterpret_cast<Fn**>(from);
      },
      [](unsigned char* s) noexcept { delete *reinterpret_cast<Fn**>(s); },
  };

  alignas(std::max_align_t) mutable unsigned char storage_[inline_size];
  const Ops* ops_ = nullptr;
};

} // namespace nbd
