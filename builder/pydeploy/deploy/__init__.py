"""The deploy side: `pydeploy run`, manifests and the Dockerfile eject."""

# Here rather than in manifests: the cli needs the names at start-up for `--format`, and
# importing manifests would pull in the plan, layers and launcher modules.
MANIFEST_FORMATS = ("kubernetes", "compose")
