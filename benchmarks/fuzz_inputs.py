"""Fuzz the input families (#35): the suite's property tests, run with many more examples.

The README's test command runs each property test with a few dozen generated cases (a few
hundred in all); this runs the same properties with ``--scale`` times as many (the
``DQAUDIT_FUZZ`` factor that ``tests/conftest.examples`` reads), and counts what Hypothesis
generated and whether anything failed:

    python benchmarks/fuzz_inputs.py --scale 20 [--tests tests/test_layouts.py ...] [--json f]

Families: folder layouts and class spellings, one file spelled many ways and separators
(test_layouts), CSV and Parquet alike (test_manifest_formats), EXIF orientation through every
decoder (test_orientation), kill points of a rescan, corrections spellings, file-system
failures and the App boundary (test_transactions).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROPERTY_TESTS = ["tests/test_layouts.py", "tests/test_manifest_formats.py",
                  "tests/test_orientation.py", "tests/test_transactions.py"]
COUNTS = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")
TEST = re.compile(r"^(tests/\S+::\S+):\s*$")


def run(tests: list[str], scale: int, seed: int, keyword: str | None = None) -> dict:
    env = {**os.environ, "DQAUDIT_FUZZ": str(scale)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "--hypothesis-show-statistics",
         f"--hypothesis-seed={seed}", *(["-k", keyword] if keyword else []), *tests],
        cwd=REPO, env=env, capture_output=True, text=True)
    per_test: dict[str, dict] = {}
    current = None
    for line in proc.stdout.splitlines():
        m = TEST.match(line.strip())
        if m:
            current = m.group(1)
            continue
        m = COUNTS.search(line)
        if m and current:
            entry = per_test.setdefault(current, {"passing": 0, "failing": 0, "invalid": 0})
            for key, value in zip(("passing", "failing", "invalid"), m.groups()):
                entry[key] += int(value)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
    if proc.returncode:  # a failure is what this is for: keep pytest's whole account of it
        log = Path(f"fuzz-failure-{scale}-{seed}.log").resolve()
        log.write_text(proc.stdout + proc.stderr)
        tail += f"; pytest's output: {log}"
    return {"scale": scale, "seed": seed, "exit_code": proc.returncode, "summary": tail,
            "seconds": round(time.perf_counter() - start, 1), "tests": per_test,
            "examples": sum(t["passing"] + t["failing"] for t in per_test.values()),
            "failing": sum(t["failing"] for t in per_test.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tests", nargs="*", default=PROPERTY_TESTS)
    ap.add_argument("-k", dest="keyword", default=None, help="pytest -k expression")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    result = run(args.tests, args.scale, args.seed, args.keyword)
    for name, t in sorted(result["tests"].items()):
        print(f"{t['passing'] + t['failing']:6d} examples  {t['failing']} failing  {name}")
    print(f"{result['examples']} examples in {result['seconds']} s, {result['failing']} failing;"
          f" pytest: {result['summary']} (exit {result['exit_code']})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
