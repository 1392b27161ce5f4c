import importlib.metadata
import os

# qconform is a pytest plugin. Installed (pip install .), its `pytest11` entry point registers it
# for every run; registering the same module again here would be refused by pluggy. From a bare
# checkout (no entry point), this registers it for every run from the repository root.
installed = any(ep.value == "harness.run.plugin" for ep in importlib.metadata.entry_points(group="pytest11"))
if not installed or os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
    pytest_plugins = ["harness.run.plugin"]
