// SPDX-License-Identifier: BSD-3-Clause
// Option mode (set_opt_mode(true)): opt_* and aio_opt_*.

#include "api/handle_impl.hpp"

#include <cerrno>

namespace nbd {

void Handle::Impl::start_option(const char* fn, OptionRecord rec) {
  require_negotiating(fn);
  if (!option.done) fail(EBUSY, fn, "another option request is in progress");
  rec.name = fn;
  rec.done = false;
  rec.count = 0;
  rec.error = 0;
  option = std::move(rec);
}

void Handle::Impl::wait_option(Lock& lock) {
  const char* fn = option.name;
  bool extra = false;
  (void)lock;
  while (!option.done) {
    if (is_dead() && option.done) break;
    drive(-1, -1, extra);
    if (!option.done && (is_dead() || is_closed()))
      fail(error ? error : ENOTCONN, fn, error_message);
  }
  if (option.error) fail(option.error, fn, option.message);
}

#define NBD_LOCK Impl::Lock lock(impl_->mu)

// Each aio_opt_X records its callbacks, then hands the engine one option;
// the transport sends it on the next drive.
#define NBD_OPTION(fn, ...)                                                                        \
  do {                                                                                             \
    impl_->start_option(fn, __VA_ARGS__);                                                          \
  } while (0)

void Handle::aio_opt_go(CompletionCallback cb) {
  NBD_LOCK;
  NBD_OPTION("opt_go", OptionRecord{.completion = std::move(cb)});
  impl_->engine.opt_go(impl_->settings);
  impl_->transport->flush();
}

void Handle::aio_opt_abort() {
  NBD_LOCK;
  NBD_OPTION("opt_abort", OptionRecord{});
  impl_->engine.opt_abort();
  impl_->transport->flush();
}

void Handle::aio_opt_list(ListCallback list, CompletionCallback cb) {
  NBD_LOCK;
  NBD_OPTION("opt_list", OptionRecord{.completion = std::move(cb), .list = std::move(list)});
  impl_->engine.opt_list();
  impl_->transport->flush();
}

void Handle::aio_opt_info(CompletionCallback cb) {
  NBD_LOCK;
  NBD_OPTION("opt_info", OptionRecord{.completion = std::move(cb)});
  impl_->engine.opt_info(impl_->settings);
  impl_->transport->flush();
}

void Handle::aio_opt_list_meta_context(ContextCallback ctx, CompletionCallback cb) {
  NBD_LOCK;
  aio_opt_list_meta_context_queries(impl_->settings.meta_contexts, std::move(ctx), std::move(cb));
}

void Handle::aio_opt_list_meta_context_queries(const std::vector<std::string>& queries,
                                               ContextCallback ctx, CompletionCallback cb) {
  NBD_LOCK;
  NBD_OPTION("opt_list_meta_context",
             OptionRecord{.completion = std::move(cb), .context = std::move(ctx)});
  impl_->engine.opt_list_meta_context(impl_->settings, queries);
  impl_->transport->flush();
}

void Handle::aio_opt_set_meta_context(ContextCallback ctx, CompletionCallback cb) {
  NBD_LOCK;
  aio_opt_set_meta_context_queries(impl_->settings.meta_contexts, std::move(ctx), std::move(cb));
}

void Handle::aio_opt_set_meta_context_queries(const std::vector<std::string>& queries,
                                              ContextCallback ctx, CompletionCallback cb) {
  NBD_LOCK;
  impl_->require_negotiating("opt_set_meta_context");
  if (!impl_->engine.structured_replies())
    impl_->fail(ENOTSUP, "opt_set_meta_context",
                "server lacks structured replies, needed for meta contexts");
  NBD_OPTION("opt_set_meta_context",
             OptionRecord{.completion = std::move(cb), .context = std::move(ctx)});
  impl_->engine.opt_set_meta_context(impl_->settings, queries);
  impl_->transport->flush();
}

void Handle::aio_opt_structured_reply(CompletionCallback cb) {
  NBD_LOCK;
  NBD_OPTION("opt_structured_reply", OptionRecord{.completion = std::move(cb)});
  impl_->engine.opt_structured_reply();
  impl_->transport->flush();
}

void Handle::aio_opt_starttls(CompletionCallback cb) {
  NBD_LOCK;
  if (!tls::supported())
    impl_->fail(ENOTSUP, "opt_starttls", "nbdcpp was built without TLS support");
  impl_->require_negotiating("opt_starttls");
  // proto.md: STARTTLS on a TLS connection is a client error.
  if (impl_->engine.tls_negotiated())
    impl_->fail(EINVAL, "opt_starttls", "TLS is already negotiated");
  NBD_OPTION("opt_starttls", OptionRecord{.completion = std::move(cb)});
  impl_->engine.opt_starttls();
  impl_->transport->flush();
}

void Handle::aio_opt_extended_headers(CompletionCallback cb) {
  NBD_LOCK;
  NBD_OPTION("opt_extended_headers", OptionRecord{.completion = std::move(cb)});
  impl_->engine.opt_extended_headers();
  impl_->transport->flush();
}

// --- blocking forms --------------------------------------------------------------------

void Handle::opt_go() {
  NBD_LOCK;
  aio_opt_go();
  impl_->wait_option(lock);
}

void Handle::opt_abort() {
  NBD_LOCK;
  aio_opt_abort();
  bool extra = false;
  while (!impl_->option.done && !impl_->is_dead() && !impl_->is_closed())
    impl_->drive(-1, -1, extra);
}

int Handle::opt_list(ListCallback cb) {
  NBD_LOCK;
  aio_opt_list(std::move(cb));
  impl_->wait_option(lock);
  return impl_->option.count;
}

void Handle::opt_info() {
  NBD_LOCK;
  aio_opt_info();
  impl_->wait_option(lock);
}

int Handle::opt_list_meta_context(ContextCallback cb) {
  NBD_LOCK;
  aio_opt_list_meta_context(std::move(cb));
  impl_->wait_option(lock);
  return impl_->option.count;
}

int Handle::opt_list_meta_context_queries(const std::vector<std::string>& queries,
                                          ContextCallback cb) {
  NBD_LOCK;
  aio_opt_list_meta_context_queries(queries, std::move(cb));
  impl_->wait_option(lock);
  return impl_->option.count;
}

int Handle::opt_set_meta_context(ContextCallback cb) {
  NBD_LOCK;
  aio_opt_set_meta_context(std::move(cb));
  impl_->wait_option(lock);
  return impl_->option.count;
}

int Handle::opt_set_meta_context_queries(const std::vector<std::string>& queries,
                                         ContextCallback cb) {
  NBD_LOCK;
  aio_opt_set_meta_context_queries(queries, std::move(cb));
  impl_->wait_option(lock);
  return impl_->option.count;
}

bool Handle::Impl::wait_option_answer(Lock& lock) {
  // STRUCTURED_REPLY, EXTENDED_HEADERS and STARTTLS: a refusal is an
  // answer (false), not an error; anything else that goes wrong throws.
  try {
    wait_option(lock);
  } catch (const Error& e) {
    const int err = e.errnum();
    const bool refused = err == ENOTSUP || err == EOPNOTSUPP || err == EPERM || err == EINVAL;
    if (is_negotiating() && refused) return false;
    throw;
  }
  return true;
}

bool Handle::opt_structured_reply() {
  NBD_LOCK;
  aio_opt_structured_reply();
  return impl_->wait_option_answer(lock) && impl_->engine.structured_replies();
}

bool Handle::opt_starttls() {
  NBD_LOCK;
  aio_opt_starttls();
  return impl_->wait_option_answer(lock) && impl_->engine.tls_negotiated();
}

bool Handle::opt_extended_headers() {
  NBD_LOCK;
  aio_opt_extended_headers();
  return impl_->wait_option_answer(lock) && impl_->engine.extended_headers();
}

} // namespace nbd
