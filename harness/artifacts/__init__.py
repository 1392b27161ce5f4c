"""Artifacts: the manifest and its JSON Schema, loading and validation, trust (no code runs), model identity, payload readers, QDQ graphs, weight hashes."""
