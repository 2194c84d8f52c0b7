"""Entry point: python run.py [serve|seed|token|fetch|bench] ... (see --help)."""

import sys

if __name__ == "__main__":
    try:
        from streaming_api.cli import main
    except KeyboardInterrupt:  # Ctrl+C while Python loads the package: an interruption, not a traceback
        sys.exit(130)
    sys.exit(main())
