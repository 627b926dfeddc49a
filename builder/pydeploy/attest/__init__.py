"""SBOM and provenance of a built image, and attaching them to it as OCI artifacts.

`sbom` and `provenance` build the documents from plain facts (pure); `contents` reads
those facts from the image's layers; `referrers` attaches a document to an image in a
registry or an OCI layout; `attach` ties them to a finished build."""
