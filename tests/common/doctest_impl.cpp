// SPDX-License-Identifier: BSD-3-Clause
// doctest's implementation, compiled once for every test executable (it is
// the costliest file to compile, most of all under sanitizers); each
// executable's main.cpp only runs it.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
