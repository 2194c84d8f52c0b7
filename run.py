"""Entry point: python run.py [serve|seed|token|fetch|bench] ... (see --help)."""

import sys

from streaming_api.cli import main

if __name__ == "__main__":
    sys.exit(main())
