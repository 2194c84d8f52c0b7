"""python -m streaming_api: the same command line as run.py."""

import sys

try:
    from streaming_api.cli import main
except KeyboardInterrupt:  # Ctrl+C while Python loads the package: an interruption, not a traceback
    sys.exit(130)

sys.exit(main())
