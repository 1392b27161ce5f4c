"""The conformance suites; installed as the `harness.suites` package (pyproject maps this folder)."""
