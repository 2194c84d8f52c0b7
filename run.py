"""Entry point: python run.py [serve|seed|token|fetch|bench] ... (see --help)."""

import sys

if __name__ == "__main__":
    try:
        from streaming_api.cli import main

        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl+C while Python loads the package: an interruption, not a traceback
        sys.exit(130)
    except ModuleNotFoundError as missing:  # a requirement not installed for this Python: outside the venv?
        if (missing.name or "").startswith("streaming_api"):
            raise
        sys.exit(
            f"error: {missing.name} is not installed for {sys.executable}: activate the virtualenv "
            "(. .venv/bin/activate) and install the requirements (pip install -r requirements.txt)"
        )
