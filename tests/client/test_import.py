"""pyarrow is optional for the client: a plain import loads none of it, and works where it is missing."""

from __future__ import annotations

import subprocess
import sys

from streaming_api.settings import PROJECT_ROOT


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_importing_the_client_loads_no_pyarrow():
    loaded = _run("import sys, streaming_api.client; print([m for m in ('pyarrow', 'numpy') if m in sys.modules])")
    assert loaded == "[]"


def test_the_client_works_without_pyarrow_until_arrow_is_asked_for():
    # sys.modules[name] = None makes `import name` fail, as on a machine without the package.
    shown = _run(
        "import sys; sys.modules['pyarrow'] = None\n"
        "from streaming_api.client import stream_rows, download\n"
        "try:\n"
        "    from streaming_api.client import read_table\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert shown == "format='arrow' needs pyarrow: pip install 'streaming_api[arrow]'"
