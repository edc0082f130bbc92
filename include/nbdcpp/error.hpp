// SPDX-License-Identifier: BSD-3-Clause
#pragma once

#include <nbdcpp/export.hpp>

#include <string>
#include <system_error>

namespace nbd {

/// The one exception type nbdcpp throws: a std::system_error whose code is
/// an errno value in std::generic_category() and whose message names the
/// call and the reason, e.g. "aio_pread: request out of bounds".
class NBDCPP_API Error : public std::system_error {
public:
  /// An error with errno value errnum and message what.
  Error(int errnum, const std::string& what)
      : std::system_error(errnum, std::generic_category(), what) {}

  /// The errno value (EINVAL, ENOTCONN, EPROTO, ...).
  int errnum() const noexcept { return code().value(); }
};

} // namespace nbd
