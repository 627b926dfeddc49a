"""The command line, the only package that prints: `main` (the group, global options,
the one place failures become output and exit codes), one module per command group
(`project`, `build`, `deploy`, `cache`), `render` (everything written), `session` (the
engine session: signals, cleanup, closing the client; the failure logs)."""
