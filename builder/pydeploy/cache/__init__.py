"""The caches: prune and inspect."""
