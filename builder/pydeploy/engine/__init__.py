"""The only code that talks to the Docker SDK, and the owner records of what it creates."""
