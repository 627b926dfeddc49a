"""Lock files read on the host into requirement lines the builder installs as they are
(`uv pip install --no-deps`): one module per format, `common` for what they share (the
target environment markers are judged against, the locked package -> line rule)."""
