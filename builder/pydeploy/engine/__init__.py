"""The only code that talks to the Docker SDK (client.py), the typed values that cross
that boundary (types.py), and the owner records of what it creates (owners.py)."""
