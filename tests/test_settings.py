"""Settings: defaults < settings.py < STREAMING_API_<NAME> (and DATABASE_URL) < explicit overrides; bad values named.

Also the generated JWT secret, which lives in the data directory.
"""

from __future__ import annotations

import multiprocessing
import re
import secrets
import stat
import time
from pathlib import Path

import jwt
import pytest

from streaming_api import settings as settings_module
from streaming_api.settings import PROJECT_ROOT, Settings, SettingsError, SettingsWarning
from streaming_api.tokens import load_keys, mint_token, verify


@pytest.fixture
def no_file(tmp_path: Path) -> Path:
    """A settings.py that does not exist, so the project's own (if any) is never read."""
    return tmp_path / "absent" / "settings.py"


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "settings.py"
    path.write_text('PAGE_SIZE = 200\nDATABASE_URL = "postgresql://file@localhost/file"\nJWT_LEEWAY = 5\n')
    return path


def test_defaults_apply_without_file_or_environment(no_file):
    assert settings_module.load(settings_file=no_file, environ={}) == Settings()


def test_settings_file_overrides_defaults(settings_file):
    loaded = settings_module.load(settings_file=settings_file, environ={})
    assert (loaded.page_size, loaded.jwt_leeway) == (200, 5)
    assert loaded.port == Settings().port


def test_environment_overrides_settings_file(settings_file):
    loaded = settings_module.load(settings_file=settings_file, environ={"STREAMING_API_PAGE_SIZE": "300"})
    assert loaded.page_size == 300
    assert loaded.jwt_leeway == 5


def test_explicit_override_beats_environment_and_file(settings_file):
    loaded = settings_module.load(
        settings_file=settings_file, environ={"STREAMING_API_PAGE_SIZE": "300"}, page_size=400
    )
    assert loaded.page_size == 400


def test_none_override_leaves_lower_layers_alone(settings_file):
    assert settings_module.load(settings_file=settings_file, environ={}, page_size=None).page_size == 200


def test_plain_database_url_overrides_settings_file(settings_file):
    loaded = settings_module.load(
        settings_file=settings_file, environ={"DATABASE_URL": "postgresql://env@localhost/env"}
    )
    assert loaded.database_url == "postgresql://env@localhost/env"


def test_prefixed_database_url_wins_over_plain_one(no_file):
    environ = {
        "DATABASE_URL": "postgresql://plain@localhost/plain",
        "STREAMING_API_DATABASE_URL": "postgresql://prefixed@localhost/prefixed",
    }
    assert (
        settings_module.load(settings_file=no_file, environ=environ).database_url
        == "postgresql://prefixed@localhost/prefixed"
    )


def test_environment_values_are_coerced_to_the_setting_types(no_file):
    environ = {
        "STREAMING_API_PORT": "9090",
        "STREAMING_API_JWT_ALGORITHMS": "HS256, HS512",
        "STREAMING_API_ROWS": "1_000",
    }
    loaded = settings_module.load(settings_file=no_file, environ=environ)
    assert (loaded.port, loaded.jwt_algorithms, loaded.rows) == (9090, ("HS256", "HS512"), 1000)


BAD_ENVIRONMENT = [
    ("STREAMING_API_PORT", "abc", "port"),
    ("STREAMING_API_PORT", "70000", "port"),
    ("STREAMING_API_PAGE_SIZE", "0", "page_size"),
    ("STREAMING_API_PAGE_SIZE", "20000", "page_size"),
    ("STREAMING_API_ARROW_PAGE_SIZE", "0", "arrow_page_size"),
    ("STREAMING_API_JWT_ALGORITHMS", "none", "jwt_algorithms"),
    ("STREAMING_API_JWT_ALGORITHMS", "HS256,RS256", "jwt_algorithms"),
    ("STREAMING_API_JWT_SECRET", "too-short", "jwt_secret"),
    ("STREAMING_API_DATABASE_URL", "mysql://u@h/d", "database_url"),
    ("STREAMING_API_LOG_LEVEL", "LOUD", "log_level"),
    ("STREAMING_API_POOL_MAX_SIZE", "0", "pool_max_size"),
    ("STREAMING_API_JWT_LEEWAY", "-1", "jwt_leeway"),
]


@pytest.mark.parametrize(("name", "value", "setting"), BAD_ENVIRONMENT)
def test_bad_environment_value_raises_naming_the_setting(no_file, name, value, setting):
    with pytest.raises(SettingsError, match=rf"\b{setting}\b"):
        settings_module.load(settings_file=no_file, environ={name: value})


def test_bad_value_in_settings_file_raises_naming_the_setting(tmp_path):
    path = tmp_path / "settings.py"
    path.write_text('PORT = "abc"\n')
    with pytest.raises(SettingsError, match=r"\bport\b"):
        settings_module.load(settings_file=path, environ={})


def test_rs256_without_a_public_key_raises(no_file):
    with pytest.raises(SettingsError, match="jwt_public_key_file"):
        settings_module.load(settings_file=no_file, environ={"STREAMING_API_JWT_ALGORITHMS": "RS256"})


def test_unknown_name_in_settings_file_is_rejected(tmp_path):
    path = tmp_path / "settings.py"
    path.write_text("PAGESIZE = 100\n")
    with pytest.raises(SettingsError, match="PAGESIZE"):
        settings_module.load(settings_file=path, environ={})


def test_unknown_override_is_rejected(no_file):
    with pytest.raises(SettingsError, match="colour"):
        settings_module.load(settings_file=no_file, environ={}, colour="red")


def test_database_url_is_not_echoed_in_its_error(no_file):
    with pytest.raises(SettingsError) as raised:
        settings_module.load(settings_file=no_file, environ={"DATABASE_URL": "mysql://user:hunter2@host/db"})
    assert "hunter2" not in str(raised.value)


# --- the generated JWT secret ----------------------------------------------------------------------


def test_without_a_secret_one_is_generated_with_mode_0600(tmp_path):
    settings = settings_module.build({"data_dir": str(tmp_path / "data")})
    load_keys(settings)
    secret_path = tmp_path / "data" / "jwt_secret"
    assert secret_path.is_file()
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert len(secret_path.read_text().strip()) >= 32


def test_generated_secret_is_reused_on_the_next_load(tmp_path):
    settings = settings_module.build({"data_dir": str(tmp_path / "data")})
    first = load_keys(settings)
    token = mint_token(first, subject="restart", ttl=60)
    second = load_keys(settings)
    assert second.verify_key == first.verify_key
    assert verify(second, f"JWT {token}")["sub"] == "restart"


def _load_at_once(barrier, data_dir: str, results) -> None:
    barrier.wait()
    try:
        results.put(load_keys(settings_module.build({"data_dir": data_dir})).verify_key.decode())
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_starting_together_share_one_whole_secret(tmp_path):
    # As `serve --workers N` starts its workers, or a server and `run.py token` start together.
    context = multiprocessing.get_context("fork")
    for attempt in range(10):
        data_dir = str(tmp_path / f"data{attempt}")
        barrier, results = context.Barrier(6), context.Queue()
        processes = [context.Process(target=_load_at_once, args=(barrier, data_dir, results)) for _ in range(6)]
        for process in processes:
            process.start()
        keys = [results.get(timeout=30) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        assert len(set(keys)) == 1, keys
        assert keys[0] == (tmp_path / f"data{attempt}" / "jwt_secret").read_text().strip()
        assert [p.name for p in (tmp_path / f"data{attempt}").iterdir()] == ["jwt_secret"]


def _claims(subject: str) -> dict[str, object]:
    return {"sub": subject, "exp": int(time.time()) + 600}


def test_a_token_another_program_signs_with_the_files_text_verifies(tmp_path):
    keys = load_keys(settings_module.build({"data_dir": str(tmp_path / "data")}))
    text = (tmp_path / "data" / "jwt_secret").read_text().strip()
    token = jwt.encode(_claims("consumer"), text, algorithm="HS256")
    assert verify(keys, f"JWT {token}")["sub"] == "consumer"


def test_the_files_text_copied_into_jwt_secret_is_the_same_key(tmp_path):
    from_file = load_keys(settings_module.build({"data_dir": str(tmp_path / "data")}))
    text = (tmp_path / "data" / "jwt_secret").read_text().strip()
    from_setting = load_keys(settings_module.build({"data_dir": str(tmp_path / "other"), "jwt_secret": text}))
    assert verify(from_setting, f"JWT {mint_token(from_file, subject='file')}")["sub"] == "file"
    assert verify(from_file, f"JWT {mint_token(from_setting, subject='setting')}")["sub"] == "setting"


def test_the_readmes_signing_snippet_makes_a_token_the_service_accepts(tmp_path, monkeypatch):
    readme = (PROJECT_ROOT / "README.md").read_text()
    after = re.split(r"Another\s+program signs a token", readme, maxsplit=1)[1]
    snippet = after.split("```python\n", 1)[1].split("```", 1)[0]
    keys = load_keys(settings_module.build({"data_dir": str(tmp_path / ".data")}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREAMING_API_JWT_SECRET", raising=False)
    namespace: dict[str, object] = {}
    exec(snippet, namespace)
    assert verify(keys, f"JWT {namespace['token']}")["sub"] == "me"


def test_a_secret_file_an_older_version_wrote_still_verifies_the_tokens_it_signed(tmp_path):
    former = secrets.token_hex(32)  # what older versions wrote: hex, the key being the bytes it spells
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "jwt_secret").write_text(former + "\n")
    keys = load_keys(settings_module.build({"data_dir": str(tmp_path / "data")}))
    signed_before = jwt.encode(_claims("before"), bytes.fromhex(former), algorithm="HS256")
    assert verify(keys, f"JWT {signed_before}")["sub"] == "before"
    # New tokens are signed with the text, as a consumer reading the file signs them.
    assert verify(keys, f"JWT {jwt.encode(_claims('text'), former, algorithm='HS256')}")["sub"] == "text"
    assert jwt.decode(mint_token(keys), former, algorithms=["HS256"])["sub"] == "cli"


def test_a_secret_file_with_too_short_a_secret_is_refused_naming_the_file(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "jwt_secret").write_text("short\n")
    with pytest.raises(SettingsError, match="jwt_secret holds fewer than 32 bytes") as raised:
        load_keys(settings_module.build({"data_dir": str(tmp_path / "data")}))
    assert "short" not in str(raised.value)  # the value itself is never shown


def test_each_data_directory_gets_its_own_secret(tmp_path):
    one = load_keys(settings_module.build({"data_dir": str(tmp_path / "one")}))
    two = load_keys(settings_module.build({"data_dir": str(tmp_path / "two")}))
    assert one.verify_key != two.verify_key


# --- names that look meant as settings but are not ------------------------------------------------


def test_a_misspelt_environment_variable_warns_naming_the_closest_setting(no_file):
    warned: list[str] = []
    settings_module.load(settings_file=no_file, environ={"STREAMING_API_PAGESIZE": "5"}, on_warning=warned.append)
    assert warned == [
        "environment variable STREAMING_API_PAGESIZE is not a setting and is ignored "
        "(did you mean STREAMING_API_PAGE_SIZE?)"
    ]


def test_a_lowercase_setting_name_in_settings_file_warns_naming_the_setting(tmp_path):
    path = tmp_path / "settings.py"
    path.write_text("import os\nport = 9000\nhelper_value = 3\n")
    warned: list[str] = []
    loaded = settings_module.load(settings_file=path, environ={}, on_warning=warned.append)
    assert loaded.port == Settings().port
    assert warned == [f"port in {path} is ignored: settings are UPPER_CASE (did you mean PORT?)"]


def test_without_a_warning_callback_a_settings_warning_is_issued(no_file):
    with pytest.warns(SettingsWarning, match="STREAMING_API_POTR"):
        settings_module.load(settings_file=no_file, environ={"STREAMING_API_POTR": "1"})


def test_an_unknown_name_in_settings_file_is_rejected_naming_the_closest_setting(tmp_path):
    path = tmp_path / "settings.py"
    path.write_text("PAGESIZE = 100\n")
    with pytest.raises(SettingsError, match=r"did you mean PAGE_SIZE\?"):
        settings_module.load(settings_file=path, environ={})


def test_a_settings_file_that_fails_to_run_raises_naming_its_line(tmp_path):
    path = tmp_path / "settings.py"
    path.write_text("ROWS = 10\nPORT = int('eighty')\n")
    with pytest.raises(SettingsError, match=r"line 2: ValueError"):
        settings_module.load(settings_file=path, environ={})
