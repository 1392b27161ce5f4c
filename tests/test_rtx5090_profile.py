"""The provisional RTX 5090 profile says, for every threshold, what it was derived from."""

import re
from pathlib import Path

from harness.judge.gates import METRICS as EXPLAIN
from harness.judge.thresholds import load_profile

PROFILE = Path(__file__).resolve().parent.parent / "harness" / "profiles" / "rtx5090.toml"


def test_every_threshold_names_its_source():
    unexplained, table, note = [], None, ""
    for line in PROFILE.read_text().splitlines():
        if line.startswith("["):
            table, note = line, ""
        elif line.startswith("note = "):
            note = line
        key = re.match(r"(\w+)\s*=", line)
        if key and key.group(1) in EXPLAIN:
            # An inline comment naming the H100 measurement or the policy, or a table note saying
            # "policy", the measurement it was copied from ("CPU measurement"), or, once calibrated
            # on the 5090 (`qconform calibrate`), "worst measured".
            if not re.search(r"#\s*(H100|policy)", line) and not re.search("policy|worst measured|CPU measurement", note):
                unexplained.append(f"{table} {line.strip()}")
    assert not unexplained, unexplained
    assert load_profile("rtx5090").name == "rtx5090"
