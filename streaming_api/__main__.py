"""python -m streaming_api: the same command line as run.py."""

import sys

from streaming_api.cli import main

sys.exit(main())
