// SPDX-License-Identifier: BSD-3-Clause
// A main() for fuzz targets built without libFuzzer (g++, or clang without
// -Dfuzz=enabled): feeds every file named on the command line, or found in
// a directory named there, to LLVMFuzzerTestOneInput once. meson runs it on
// each target's corpus as the tests of suite "fuzz", so the corpus (and every
// crasher added to it) is replayed by every ordinary build.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

bool run_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) {
    std::fprintf(stderr, "cannot open %s\n", p.c_str());
    return false;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // A copy of exactly the input's size, so a read past it is caught by ASan.
  std::vector<std::uint8_t> input(bytes.begin(), bytes.end());
  LLVMFuzzerTestOneInput(input.data(), input.size());
  return true;
}

} // namespace

int main(int argc, char** argv) {
  std::size_t files = 0;
  bool ok = true;
  for (int i = 1; i < argc; ++i) {
    std::filesystem::path p = argv[i];
    if (std::filesystem::is_directory(p)) {
      std::vector<std::filesystem::path> entries;
      for (const auto& e : std::filesystem::directory_iterator(p))
        if (e.is_regular_file()) entries.push_back(e.path());
      std::sort(entries.begin(), entries.end());
      for (const auto& e : entries) {
        ok = run_file(e) && ok;
        ++files;
      }
    } else {
      ok = run_file(p) && ok;
      ++files;
    }
  }
  std::printf("%zu inputs replayed\n", files);
  // An empty corpus means the test replays nothing: say so (skip).
  if (files == 0) return 77;
  return ok ? 0 : 1;
}
