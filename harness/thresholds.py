"""Threshold profiles: one TOML per device class, one table per (pathway, model).

Every gate reads its number from here, and every number carries an explanation that the report
prints beside the measured value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import tomllib

from harness.core import RECIPE_KEYS, Device

# key -> (direction, what it measures). "min": measured must be >= value; "max": <= value.
EXPLAIN: dict[str, tuple[str, str]] = {
    "min_sqnr_db": ("min", "SQNR of the primary output against the fp32 reference, dB (higher is closer)"),
    "min_cosine": ("min", "cosine similarity of the primary output to the fp32 reference"),
    "min_row_cosine": ("min", "worst per-row (per sentence / per token) cosine to the fp32 reference"),
    "min_token_agreement": ("min", "fraction of positions whose greedy next token equals the reference's"),
    "min_ranking_agreement": ("min", "Spearman correlation of pair similarities, candidate vs reference"),
    "max_rel_task_drop": ("max", "relative loss of the task score vs the reference (MLPerf-style 1% = keep 99%)"),
    "min_speedup": ("min", "median speedup over the full-precision baseline, same run, interleaved"),
    "min_golden_sqnr_db": ("min", "SQNR of the output against the stored golden output of this pathway, dB"),
    "min_cross_sqnr_db": ("min", "SQNR between two runtimes' outputs for the same artifact or recipe (e.g. CPU EP vs CUDA EP), dB"),
    "min_cross_token_agreement": ("min", "fraction of greedy tokens two runtimes agree on for the same artifact or recipe"),
    "min_e4m3_over_e5m2_db": ("min", "output SQNR of FP8 E4M3 minus that of E5M2 (same recipe): E4M3 must be at least as accurate in range"),
    # Layer-level gates (harness/layout_checks.py, harness/localize.py): the worst layer is named.
    "min_layer_weight_sqnr_db": ("min", "worst layer's SQNR of the weight the runtime uses against the model's fp32 weight, dB"),
    "min_layer_activation_sqnr_db": ("min", "worst layer's output SQNR inside the quantized model against the same layer in the fp32 reference, dB"),
    "min_code_range_use": ("min", "worst layer's fraction of int8 output channels whose largest |code| reaches 126 (max-abs scales reach 127)"),
    "max_weight_scale_log2_err": ("max", "worst channel's |log2(weight scale * largest code / max|w|)|, against the model's fp32 weights"),
    "min_activation_scale_log2": ("min", "lowest layer's log2(activation scale / scale implied by the fp32 input range on the calibration data): below, inputs clip"),
    "max_activation_scale_log2": ("max", "highest layer's log2(activation scale / scale implied by the fp32 input range on the calibration data): above, codes go unused"),
    "max_weight_amax_rel_err": ("max", "worst layer's relative error of the recorded weight amax against the model's max |w|"),
    "max_input_amax_ratio": ("max", "worst layer's factor between the recorded input amax and a fresh measurement on the calibration data"),
}


def threshold_key(metric: str) -> str:
    """The threshold that gates a metric: `token_agreement` -> `min_token_agreement`."""
    for key in (f"min_{metric}", f"max_{metric}"):
        if key in EXPLAIN:
            return key
    raise KeyError(f"no threshold key gates metric {metric!r}; known: {', '.join(EXPLAIN)}")


class ProfileError(Exception):
    """A profile is missing, unreadable, or lacks a threshold a gate needs."""


@dataclass(frozen=True)
class Threshold:
    key: str
    value: float
    source: str  # "cpu.toml [inc-int8-qdq.tiny-llama]"

    @property
    def direction(self) -> str:
        return EXPLAIN[self.key][0]

    @property
    def explanation(self) -> str:
        return EXPLAIN[self.key][1]

    def passes(self, measured: float) -> bool:
        if math.isnan(measured):
            return False
        return measured >= self.value if self.direction == "min" else measured <= self.value

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

    def has(self, key: str, *table: str) -> bool:
        try:
            return key in self.table(*table)
        except ProfileError:
            return False


def detect_profile_name(device: Device) -> str:
    if device.kind != "cuda":
        return "cpu"
    name = device.name.lower()
    if "h100" in name:
        return "h100"
    if "5090" in name:
        return "rtx5090"
    return "generic-gpu"


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
                if key not in EXPLAIN:
                    raise ProfileError(f"{label}: [{'.'.join(where)}] unknown threshold {key!r}; known: {', '.join(EXPLAIN)}")
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ProfileError(f"{label}: [{'.'.join(where)}] {key} must be a number, got {value!r}")

    walk(data, [])


# -- calibration: thresholds from measurements ---------------------------------------------

# Policy thresholds are not measured: they state what the release demands.
POLICY = {"max_rel_task_drop": 0.01, "min_golden_sqnr_db": 35.0, "max_weight_amax_rel_err": 0.01, "max_input_amax_ratio": 1.05}


def margin_for(key: str, worst: float, speed_margin: float = 0.10) -> float:
    """A threshold a clean run clears with room, from the worst measured value of repeated runs."""
    if key in POLICY:
        return POLICY[key]
    if key == "min_speedup":
        return math.floor(worst * (1 - speed_margin) * 100) / 100
    if key in ("min_sqnr_db", "min_layer_weight_sqnr_db", "min_layer_activation_sqnr_db"):
        return math.floor(worst - 2.0)
    if key == "min_code_range_use":
        return math.floor((worst - 0.02) * 100) / 100
    if key in ("max_weight_scale_log2_err", "max_activation_scale_log2"):
        return math.ceil((worst + 0.05) * 100) / 100
    if key == "min_activation_scale_log2":
        return math.floor((worst - 0.05) * 100) / 100
    if key == "min_token_agreement":
        return math.floor((worst - 0.03) * 100) / 100
    if key in ("min_cosine", "min_row_cosine", "min_ranking_agreement"):
        return math.floor((1 - 2 * (1 - worst)) * 1000) / 1000  # twice the measured distance from 1
    raise KeyError(f"no calibration rule for {key!r}")


def calibrated_profile(name: str, description: str, records: list[dict[str, Any]], table_of, provenance: str) -> str:
    """TOML text of a profile whose thresholds sit a margin under the worst of `records`."""
    worst: dict[tuple[str, ...], dict[str, float]] = {}
    for record in records:
        if "metric" not in record:
            continue
        key, value = record["metric"], float(record["measured"])  # summary.json spells inf as "inf"
        table = worst.setdefault(table_of(record), {})
        better_is_higher = EXPLAIN[key][0] == "min"
        if key not in table or (value < table[key] if better_is_higher else value > table[key]):
            table[key] = value
    lines = [
        f"# Calibrated by `qconform calibrate` from {provenance}.",
        "# Each threshold sits a margin under the worst measured value (rules: harness/thresholds.py margin_for);",
        "# max_rel_task_drop and min_golden_sqnr_db are policy, not measurements.",
        "",
        "[profile]",
        f'name = "{name}"',
        f'description = "{description}"',
    ]
    natural = lambda table: [(0, int(part[1:]), "") if part[:1] == "m" and part[1:].isdigit() else (1, 0, part) for part in table]  # noqa: E731
    for table in sorted(worst, key=natural):
        measured = ", ".join(f"{k} {v:.4g}" for k, v in sorted(worst[table].items()))
        lines += ["", f"[{'.'.join(table)}]", f'note = "worst measured: {measured}"']
        lines += [f"{k} = {margin_for(k, v)}" for k, v in sorted(worst[table].items())]
    return "\n".join(lines) + "\n"
