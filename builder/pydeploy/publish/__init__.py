"""Where a built image goes: the daemon, a registry, an OCI layout or a docker-archive."""
