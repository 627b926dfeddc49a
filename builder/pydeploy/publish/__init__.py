"""Where a built image goes. `outputs` maps each of the user's outputs to one Publisher
(`publisher`): `daemon` (docker load), `push` (registry, through the `registry` client),
`oci_layout` (OCI layout directory), `docker_archive` (docker-archive tar)."""
