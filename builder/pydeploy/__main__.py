"""`python -m pydeploy`."""

from __future__ import annotations

from pydeploy.cli.main import main

if __name__ == "__main__":
    main()
