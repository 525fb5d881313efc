#!/usr/bin/env python3
"""Independent count of the JUnit corpus, used to write the table in
`worker-agent/tests/junit_corpus.rs`.

It does not share code with the Rust parser: it reads each file with
`xml.etree.ElementTree` and applies the counting rules documented in
`worker-agent/src/junit.rs` by hand:

- a case is a `<testcase>` element whose ancestors are all `<testsuite>` /
  `<testsuites>` elements (the root must be one of those two);
- outcome, by direct children: `<error>` > `<failure>` > `<rerunFailure>` /
  `<rerunError>` (failed) > `<skipped type="pytest.xfail">` (xfailed) >
  `<skipped>` > `status="disabled|notrun|skipped"` (skipped) > passed.

Usage: python3 count_cases.py [corpus-dir]   (prints one line per file)
"""

import os
import sys
import xml.etree.ElementTree as ET

CONTAINERS = {"testsuite", "testsuites"}


def local(tag):
    return tag.rsplit("}", 1)[-1].split(":")[-1]


def outcome(case):
    kids = [local(c.tag) for c in case]
    if "error" in kids:
        return "error"
    if "failure" in kids:
        return "failed"
    if "rerunFailure" in kids or "rerunError" in kids:
        return "failed"
    skipped = [c for c in case if local(c.tag) == "skipped"]
    if skipped:
        return "xfailed" if skipped[0].get("type") == "pytest.xfail" else "skipped"
    if (case.get("status") or "").strip().lower() in {"disabled", "notrun", "skipped"}:
        return "skipped"
    return "passed"


def count(root):
    counts = dict(total=0, passed=0, failed=0, error=0, skipped=0, xfailed=0)
    suites = 0

    def walk(el):
        nonlocal suites
        if local(el.tag) == "testsuite":
            suites += 1
        for child in el:
            tag = local(child.tag)
            if tag in CONTAINERS:
                walk(child)
            elif tag == "testcase":
                counts["total"] += 1
                counts[outcome(child)] += 1

    walk(root)
    return counts, suites


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    for dirpath, _, files in sorted(os.walk(base)):
        for name in sorted(files):
            if not (name.endswith(".xml") or name.endswith(".junit-xml")):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, base)
            data = open(path, "rb").read()
            # `<<computed>>` is a placeholder left in a web-test-runner fixture:
            # a raw `<` in an attribute value, which expat refuses but the Rust
            # parser (quick-xml) accepts. Substitute it so etree can count.
            data = data.replace(b'"<<computed>>"', b'"0"')
            try:
                root = ET.fromstring(data)
            except ET.ParseError as e:
                print(f"{rel}\tPARSE-ERROR\t{e}")
                continue
            if local(root.tag) not in CONTAINERS:
                print(f"{rel}\tNOT-JUNIT\t{local(root.tag)}")
                continue
            c, suites = count(root)
            print(
                f"{rel}\ttotal={c['total']} passed={c['passed']} failed={c['failed']} "
                f"error={c['error']} skipped={c['skipped']} xfailed={c['xfailed']} suites={suites}"
            )


if __name__ == "__main__":
    main()
