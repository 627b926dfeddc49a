"""File entries, deterministic tar and gzip, layers, image config and manifest, blobs,
OCI layout and docker-archive."""
