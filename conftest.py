# qconform is a pytest plugin; this registers it for every run from the repository root.
pytest_plugins = ["harness.plugin"]
