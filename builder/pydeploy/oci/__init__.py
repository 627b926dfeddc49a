"""Deterministic OCI images without a daemon. Data flows entries -> tar -> layer (tar and
gzip in the blob store) -> config/manifest -> image -> layout or docker-archive:

- entries: file entries, the mode policy, entries from tar streams and host directories
- tar, compress: the deterministic tar encoder and the layers' gzip
- layer: Layer and build_layer; config: the config/manifest documents and media types
- image: BaseImage, Image, assemble_image; blobs: the content-addressed blob store
- archive: `docker save` import and docker-archive writer; layout: OCI layout writer
- streams, writing: chunk-iterator streams; what the writers share

The same inputs give the same bytes: entries are sorted, parents added, owners, modes and
mtimes fixed. Golden digests (tests/unit/oci/test_golden_digests.py) pin them.
"""
