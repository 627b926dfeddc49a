"""The base image without an engine: fetched from a registry, an OCI layout or a `docker
save` archive into the host blob store, and the facts the build needs read from its
layers (accounts, interpreter, libc) without extracting them."""
