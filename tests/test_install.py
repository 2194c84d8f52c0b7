"""The README's two installs: a light one that runs the service (requirements.txt), and the whole one the
tests need (requirements-test.txt); CI installs exactly those and runs the README's test command; and a test
run keeps no more on disk than the failures of its last run."""

from __future__ import annotations

import re
import tomllib

from streaming_api.settings import PROJECT_ROOT

# What only the tests, the bench's plot and format=arrow use: never part of running the service.
HEAVY = {"pytest", "pytest-aiohttp", "hypothesis", "polars", "pandas", "duckdb", "matplotlib", "pyarrow", "numpy"}


def _requirements(name: str) -> list[str]:
    lines = (PROJECT_ROOT / name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _project() -> dict:
    return tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower()


def _code_blocks(section: str) -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    text = readme.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```\n(.*?)```", text, re.DOTALL))


def test_the_running_install_is_the_package_without_the_tests_or_the_data_tools():
    assert _requirements("requirements.txt") == ["-e ."]
    assert not {_name(r) for r in _project()["project"]["dependencies"]} & HEAVY


def test_the_test_install_is_the_test_extra_with_the_bench_and_arrow_in_it():
    assert _requirements("requirements-test.txt") == ["-e .[test]"]
    test = {_name(r) for r in _project()["project"]["optional-dependencies"]["test"]}
    assert {"pytest", "pytest-aiohttp", "hypothesis", "polars", "pandas", "duckdb"} <= test
    assert "streaming_api[bench,arrow]" in _project()["project"]["optional-dependencies"]["test"]


def test_ci_installs_what_the_readme_says_and_runs_its_test_command():
    quick_start, tests = _code_blocks("Quick start"), _code_blocks("Tests")
    assert "pip install -r requirements.txt" in quick_start and "python run.py" in quick_start
    assert "pip install -r requirements-test.txt" in tests and "python -m pytest" in tests
    ci = (PROJECT_ROOT / ".ci" / "run").read_text()
    installed = re.findall(r"^python -m pip install --quiet (.+)$", ci, re.MULTILINE)
    assert installed == ["--upgrade pip", "-r requirements.txt", "-r requirements-test.txt", "'ruff>=0.8,<1'"]
    assert ci.rstrip().splitlines()[-1] == "python -m pytest"


def test_a_test_run_keeps_the_temporary_directories_of_its_failed_tests_only():
    options = _project()["tool"]["pytest"]["ini_options"]
    assert options["tmp_path_retention_policy"] == "failed"
    assert options["tmp_path_retention_count"] == 1
