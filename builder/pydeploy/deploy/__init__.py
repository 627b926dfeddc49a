"""The deploy side: `pydeploy run`, manifests and the Dockerfile eject."""
