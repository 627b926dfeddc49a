"""The [tool.pydeploy] models, project metadata, workspaces, the JSON schema and `init`."""
