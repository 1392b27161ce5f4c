"""Running: the pytest plugin (hooks and fixtures only), the session (case selection, validation), the artifact store, capability probes, scale-out."""
