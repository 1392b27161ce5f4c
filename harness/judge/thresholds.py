"""Threshold profiles: one TOML per device class, one table per (pathway, model).

Every gate reads its number from here, and every number carries an explanation that the report
prints beside the measured value.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from harness.core import RECIPE_KEYS, Device
from harness.judge.gates import METRICS, calibrated_threshold, metric, passes


class ProfileError(Exception):
    """A profile is missing, unreadable, or lacks a threshold a gate needs."""


@dataclass(frozen=True)
class Threshold:
    key: str
    value: float
    source: str  # "cpu.toml [inc-int8-qdq.tiny-llama]"

    @property
    def direction(self) -> str:
        return metric(self.key).direction

    @property
    def explanation(self) -> str:
        return metric(self.key).explanation

    def passes(self, measured: float) -> bool:
        return passes(self.key, measured, self.value)

    def describe(self) -> str:
        op = ">=" if self.direction == "min" else "<="
        return f"{self.key} {op} {self.value:g} ({self.source})"


@dataclass(frozen=True)
class Profile:
    name: str
    path: str
    data: dict[str, Any]

    def table(self, *keys: str) -> dict[str, Any]:
        node: Any = self.data
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                raise ProfileError(f"{self.path}: no table [{'.'.join(keys)}]")
            node = node[key]
        return node

    def threshold(self, key: str, *table: str) -> Threshold:
        """`key` from the most specific table that has it: [a.b.c], then [a.b] (never [a] alone)."""
        for depth in range(len(table), min(2, len(table)) - 1, -1):
            try:
                values = self.table(*table[:depth])
            except ProfileError:
                continue
            if key in values:
                return Threshold(key, float(values[key]), f"{Path(self.path).name} [{'.'.join(table[:depth])}]")
        self.table(*table[: min(2, len(table))])  # names the missing table, if that is the problem
        raise ProfileError(f"{self.path}: table [{'.'.join(table)}] has no {key!r}")

    def has_table(self, *table: str) -> bool:
        try:
            self.table(*table)
            return True
        except ProfileError:
            return False

    def has(self, key: str, *table: str) -> bool:
        try:
            return key in self.table(*table)
        except ProfileError:
            return False


def resolve(profile: Profile, key: str, table: tuple[str, ...], policy_table: tuple[str, ...] | None) -> Threshold:
    """A threshold from the device profile's most specific table that has it; else from the policy
    table of defaults.toml (the Threshold's source says which). Every gate resolves through here."""
    try:
        return profile.threshold(key, *table)
    except ProfileError:
        pass
    if policy_table is not None:
        try:
            return default_profile().threshold(key, *policy_table)
        except ProfileError:
            pass
    where = f"[{toml_table(table)}]"
    fallback = f" nor defaults.toml [{toml_table(policy_table)}]" if policy_table else " (no policy table applies: the model declares no kind)"
    raise ProfileError(f"no threshold {key!r} for {where}: neither {profile.path}{fallback} sets it")


def detect_profile_name(device: Device) -> str:
    if device.kind != "cuda":
        return "cpu"
    name = device.name.lower()
    if "h100" in name:
        return "h100"
    if "5090" in name:
        return "rtx5090"
    return "generic-gpu"


@functools.cache
def default_profile() -> Profile:
    """defaults.toml: policy thresholds per (pathway, kind of model) for models with no calibrated table."""
    return load_profile("defaults")


def load_profile(name_or_path: str) -> Profile:
    """Load a built-in profile by name ("cpu", "h100", ...) or any TOML file by path."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        text_source, label = path, str(path)
        if not path.is_file():
            raise ProfileError(f"{path}: profile file does not exist")
    else:
        text_source = resources.files("harness.profiles") / f"{name_or_path}.toml"
        label = f"harness/profiles/{name_or_path}.toml"
        if not text_source.is_file():
            known = sorted(p.name.removesuffix(".toml") for p in resources.files("harness.profiles").iterdir() if p.name.endswith(".toml"))
            raise ProfileError(f"no built-in profile {name_or_path!r}; known: {', '.join(known)} (or pass a .toml path)")
    try:
        data = tomllib.loads(text_source.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{label}: not valid TOML ({exc})") from exc
    _validate(label, data)
    return Profile(data.get("profile", {}).get("name", path.stem), label, data)


def _validate(label: str, data: dict[str, Any]) -> None:
    """Reject unknown threshold keys and non-numbers, so a typo can't silently disable a gate."""

    def walk(node: dict[str, Any], where: list[str]) -> None:
        for key, value in node.items():
            if where and where[-1] == "expect":  # [pathway.model.expect]: the expected recipe
                if key not in RECIPE_KEYS:
                    raise ProfileError(f"{label}: [{'.'.join(where)}] unknown recipe key {key!r}; known: {', '.join(RECIPE_KEYS)}")
                continue
            if isinstance(value, dict):
                walk(value, where + [key])
            elif where and where[0] != "profile" and key != "note":
                if key not in METRICS:
                    raise ProfileError(f"{label}: [{'.'.join(where)}] unknown threshold {key!r}; known: {', '.join(METRICS)}")
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ProfileError(f"{label}: [{'.'.join(where)}] {key} must be a number, got {value!r}")

    walk(data, [])


# -- calibration: thresholds from measurements ---------------------------------------------

def toml_table(keys) -> str:
    """A TOML table header's dotted path; keys with other than [A-Za-z0-9_-] (a model id like
    "llama-3.1-8b") are quoted, or their dots would nest tables."""
    return ".".join(k if k and all(c.isascii() and (c.isalnum() or c in "_-") for c in k) else f'"{k}"' for k in keys)


def calibrated_profile(name: str, description: str, records: list[dict[str, Any]], table_of, provenance: str) -> str:
    """TOML text of a profile whose thresholds sit a margin under the worst of `records`."""
    worst: dict[tuple[str, ...], dict[str, float]] = {}
    for record in records:
        if record.get("metric") not in METRICS or record.get("measured") is None:
            continue  # yes/no artifact checks have no threshold to calibrate
        key, value = record["metric"], float(record["measured"])  # summary.json spells inf as "inf"
        table = worst.setdefault(table_of(record), {})
        better_is_higher = metric(key).direction == "min"
        if key not in table or (value < table[key] if better_is_higher else value > table[key]):
            table[key] = value
    lines = [
        f"# Calibrated by `qconform calibrate` from {provenance}.",
        "# Each threshold sits a margin under the worst measured value (rules: harness/judge/gates.py METRICS margins);",
        "# max_rel_task_drop and min_golden_sqnr_db are policy, not measurements.",
        "",
        "[profile]",
        f'name = "{name}"',
        f'description = "{description}"',
    ]
    natural = lambda table: [(0, int(part[1:]), "") if part[:1] == "m" and part[1:].isdigit() else (1, 0, part) for part in table]  # noqa: E731
    for table in sorted(worst, key=natural):
        measured = ", ".join(f"{k} {v:.4g}" for k, v in sorted(worst[table].items()))
        lines += ["", f"[{toml_table(table)}]", f'note = "worst measured: {measured}"']
        lines += [f"{k} = {calibrated_threshold(k, v)}" for k, v in sorted(worst[table].items())]
    return "\n".join(lines) + "\n"
