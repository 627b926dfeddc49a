"""pydeploy's own layers: the user, the launcher, system packages."""
