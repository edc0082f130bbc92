#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
"""Counts test results from meson's testlog.json files.

A doctest executable counts as its test cases ("[doctest] test cases: N |
P passed | F failed | S skipped"); any other test counts as one. A test
that exited 77 is skipped. doctest's own "skipped" also counts the cases a
-tc filter left out (one executable serves several meson tests), so it is
not added. Prints the totals as the last line:
"N passed, N failed, N skipped".
"""
import json
import re
import sys

DOCTEST = re.compile(
    r"\[doctest\] test cases:\s*(\d+) \|\s*(\d+) passed \|\s*(\d+) failed \|\s*(\d+) skipped")

passed = failed = skipped = 0
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            t = json.loads(line)
            result = t.get("result")
            m = DOCTEST.findall(t.get("stdout", "") or "")
            if result == "SKIP":
                skipped += 1
            elif m:
                _, p, fl, _ = (int(x) for x in m[-1])
                passed += p
                failed += fl
                # A crash after the summary still fails the run.
                if result not in ("OK", "EXPECTEDFAIL") and fl == 0:
                    failed += 1
            elif result in ("OK", "EXPECTEDFAIL"):
                passed += 1
            else:
                failed += 1
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
