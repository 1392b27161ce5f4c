"""Profiles for planted pathways (tests/planted_pathways.py), which have no threshold tables of their
own. Kept apart from the planted pathways: importing this registers no pathway in the process."""


def inheriting_profile(profile: str, planted: str, parent: str, model_id: str, model_kind: str) -> str:
    """TOML text of the built-in `profile` plus a table for `planted` on `model_id`: the thresholds
    `parent` (the pathway it imitates) would get there, its policy table for `model_kind` from
    defaults.toml overlaid by the profile's own table for the model; device-class subtables kept.
    A planted pathway is then judged by exactly the gates of the real one.

        python -m tests.planted_profiles h100 planted-slow-fp8-artifact torchao-fp8-rowwise ckpt-0.1b causal-lm > planted.toml
    """
    import json
    from importlib import resources

    import tomllib

    def read(name: str) -> dict:
        return tomllib.loads((resources.files("harness.profiles") / f"{name}.toml").read_text())

    own, policy = read(profile), read("defaults")
    table = dict(policy.get(parent, {}).get(f"default-{model_kind}", {}))
    for key, value in own.get(parent, {}).get(model_id, {}).items():
        table[key] = {**table.get(key, {}), **value} if isinstance(value, dict) else value
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    lines = [(resources.files("harness.profiles") / f"{profile}.toml").read_text(), f"\n[{json.dumps(planted)}.{json.dumps(model_id)}]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in scalars.items()]
    for sub, values in ((k, v) for k, v in table.items() if isinstance(v, dict)):
        lines += [f"\n[{json.dumps(planted)}.{json.dumps(model_id)}.{json.dumps(sub)}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    print(inheriting_profile(*sys.argv[1:6]), end="")
