// SPDX-License-Identifier: BSD-3-Clause
#pragma once

// The shared library is built with hidden visibility; only what carries this
// macro is part of its ABI. The static core library used by tests and
// fuzzers defines NBDCPP_STATIC so the macro expands to nothing there.
#if defined(NBDCPP_STATIC)
#define NBDCPP_API
#elif defined(NBDCPP_BUILDING)
#define NBDCPP_API __attribute__((visibility("default")))
#else
#define NBDCPP_API
#endif
