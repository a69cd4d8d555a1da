"""`python -m ai_service_client`: the same as the `ai-client` command."""

from __future__ import annotations

import sys

from ai_service_client.cli import main

if __name__ == "__main__":
    sys.exit(main())
