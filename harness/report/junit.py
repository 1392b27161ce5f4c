"""JUnit XML says what the verdict says. pytest's junitxml writes every failed call as a <failure>;
an item qconform could not measure (an exception in its body other than the check's own failure:
run/plugin.py is_finding) is an error in summary.json, the HTML report and the exit code, so its
testcase is rewritten as an <error> naming the exception, and each testsuite's counts with it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path


def crashes_as_errors(path: Path, crashes: dict[str, str]) -> int:
    """Rewrite the <failure> of each crashed item (pytest node id -> the exception) as an <error>;
    returns how many testcases changed."""
    from _pytest.junitxml import mangle_test_address  # how junitxml names a node id's testcase

    wanted = {}
    for nodeid, message in crashes.items():
        names = mangle_test_address(nodeid)
        wanted[(".".join(names[:-1]), names[-1])] = message
    tree = ET.parse(path)
    changed = 0
    for suite in tree.iter("testsuite"):
        for case in suite.iter("testcase"):
            failure, message = case.find("failure"), wanted.get((case.get("classname"), case.get("name")))
            if failure is not None and message is not None:
                failure.tag = "error"
                failure.set("message", f"qconform could not measure: {message}")
                changed += 1
        suite.set("failures", str(sum(1 for case in suite.iter("testcase") if case.find("failure") is not None)))
        suite.set("errors", str(sum(1 for case in suite.iter("testcase") if case.find("error") is not None)))
    if changed:
        tree.write(path, encoding="utf-8", xml_declaration=True)
    return changed
