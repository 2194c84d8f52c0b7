"""python -m streaming_api: the same command line as run.py."""

import sys

# Guarded: the workers of `serve --workers` are fresh interpreters that import this module again.
if __name__ == "__main__":
    try:
        from streaming_api.cli import main
    except KeyboardInterrupt:  # Ctrl+C while Python loads the package: an interruption, not a traceback
        sys.exit(130)
    sys.exit(main())
