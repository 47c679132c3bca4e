"""Settings in one place, safe defaults and one-line startup errors, through the real CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from parcelhook.config import Settings, env_name

EXE = [sys.executable, "-m", "parcelhook.cli"]


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PARCELHOOK_")}
    return subprocess.run(
        [*EXE, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    return result.stderr


def test_serve_help_lists_every_setting_with_its_variable(tmp_path: Path) -> None:
    result = run("serve", "--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name in Settings.model_fields:
        if name in ("retry", "http_port"):
            continue
        assert env_name(name) in text, name
    for promised in ("RETENTION_DAYS", "SECURE_COOKIES", "SECRET_GRACE_HOURS", "DEMO"):
        assert f"PARCELHOOK_{promised}" in text
    assert "PARCELHOOK_HTTP_PORT" in " ".join(run("worker", "--help", cwd=tmp_path).stdout.split())


def test_config_shows_effective_values_from_flags_env_and_dotenv_with_secrets_masked(
    tmp_path: Path,
) -> None:
    key = Fernet.generate_key().decode()
    (tmp_path / ".env").write_text(
        "PARCELHOOK_RETENTION_DAYS=7\nPARCELHOOK_PORT=9000\nPARCELHOOK_SMTP_PASSWORD=hunter2\n"
    )
    result = run(
        "config",
        "--json",
        "--port",
        "9100",
        cwd=tmp_path,
        env={
            "PARCELHOOK_MASTER_KEY": key,
            "PARCELHOOK_SECURE_COOKIES": "true",
            "PARCELHOOK_SECRET_GRACE_HOURS": "2",
            "PARCELHOOK_DATABASE_URL": "postgresql://ph:s3cret-pw@db.example/ph",
        },
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["retention_days"] == 7  # .env
    assert shown["port"] == 9100  # the flag wins over .env
    assert shown["secure_cookies"] is True and shown["secret_grace_hours"] == 2
    assert shown["master_key"] == "********" and shown["smtp_password"] == "********"
    for secret in (key, "hunter2", "s3cret-pw"):
        assert secret not in result.stdout
    assert shown["database_url"] == "postgresql://ph:***@db.example/ph"
    plain = run("config", cwd=tmp_path)
    assert "PARCELHOOK_RETENTION_DAYS" in plain.stdout and "hunter2" not in plain.stdout


def test_mysql_is_refused_in_one_line_naming_the_setting_and_what_works(tmp_path: Path) -> None:
    err = one_line_error(run("migrate", "--database-url", "mysql://u:pw@h/db", cwd=tmp_path))
    assert "--database-url / PARCELHOOK_DATABASE_URL" in err
    assert "sqlite:///" in err and "postgresql://" in err and "pw" not in err.split("mysql")[0]


def test_a_bad_master_key_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    err = one_line_error(
        run(
            "account", "create", "--email", "a@example.com", "--password", "pw123456",
            "--database-url", db, cwd=tmp_path, env={"PARCELHOOK_MASTER_KEY": "not-a-key"},
        )
    )  # fmt: skip
    assert "PARCELHOOK_MASTER_KEY" in err and "not-a-key" not in err


def test_a_busy_port_is_found_before_anything_is_migrated_or_started(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        db = tmp_path / "never.db"
        err = one_line_error(
            run("serve", "--port", str(port), "--database-url", f"sqlite:///{db}", cwd=tmp_path)
        )
    finally:
        busy.close()
    assert "--port / PARCELHOOK_PORT" in err and str(port) in err
    assert not db.exists() and not (tmp_path / "never.key").exists()


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """Start serve, wait until it says it serves, stop it; its stdout and stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PARCELHOOK_")}
    proc = subprocess.Popen(
        [*EXE, "serve", "--port", "0", *args],
        cwd=tmp_path,
        env={**clean, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    out = ""
    while "serving on" not in out and time.monotonic() < deadline and proc.poll() is None:
        out += proc.stdout.readline()
    proc.terminate()
    rest, err = proc.communicate(timeout=30)
    return out + rest, err


def test_serve_creates_and_prints_no_credentials_unless_asked(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'prod.db'}"
    out, err = _serve(tmp_path, "--database-url", db)
    assert "serving on" in out, err
    assert "password" not in out and "secret_key" not in out and "demo@" not in out + err
    demo, _ = _serve(tmp_path, "--database-url", db, "--demo")
    assert "demo@parcelhook.local" in demo and "secret_key" in demo


# -- the master key -----------------------------------------------------------------------


def _create(cwd: Path, db: str, email: str, env: dict[str, str] | None = None) -> dict[str, str]:
    result = run(
        "account", "create", "--email", email, "--password", "pw123456", "--json",
        "--database-url", db, cwd=cwd, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    created: dict[str, str] = json.loads(result.stdout)
    return created


def test_sqlites_key_file_lives_next_to_the_database_whatever_the_directory(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    db = f"sqlite:///{tmp_path / 'data' / 'ph.db'}"
    _create(tmp_path / "one", db, "a@example.com")
    _create(tmp_path / "two", db, "b@example.com")
    key = tmp_path / "data" / "ph.key"
    assert key.exists() and key.stat().st_mode & 0o777 == 0o600
    assert not list((tmp_path / "one").iterdir()) and not list((tmp_path / "two").iterdir())


def test_a_process_with_another_key_refuses_to_start_and_names_the_setting(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'ph.db'}"
    _create(tmp_path, db, "a@example.com")
    other = {"PARCELHOOK_MASTER_KEY": Fernet.generate_key().decode()}
    err = one_line_error(
        run(
            "account", "create", "--email", "b@example.com", "--password", "pw123456",
            "--database-url", db, cwd=tmp_path, env=other,
        )
    )  # fmt: skip
    assert "PARCELHOOK_MASTER_KEY" in err and "sealed with master key" in err
    # the right key, given by variable, is accepted
    right = (tmp_path / "ph.key").read_text().strip()
    _create(tmp_path, db, "c@example.com", env={"PARCELHOOK_MASTER_KEY": right})


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_postgresql_needs_its_key_given(database_url: str, tmp_path: Path) -> None:
    err = one_line_error(
        run(
            "account", "create", "--email", "a@example.com", "--password", "pw123456",
            "--database-url", database_url, cwd=tmp_path,
        )
    )  # fmt: skip
    assert "PARCELHOOK_MASTER_KEY" in err and "--key-file" in err
    assert not list(tmp_path.glob("*.key"))
    # migrating needs no key
    assert run("migrate", "--database-url", database_url, cwd=tmp_path).returncode == 0


def test_a_lease_shorter_than_the_timeout_is_refused_naming_both(tmp_path: Path) -> None:
    err = one_line_error(run("worker", "--timeout", "30", "--lease-seconds", "20", cwd=tmp_path))
    assert "--lease-seconds / PARCELHOOK_LEASE_SECONDS" in err
    assert "--timeout / PARCELHOOK_TIMEOUT" in err


@pytest.mark.parametrize("command", ["serve", "worker", "config"])
def test_the_metrics_token_is_never_a_flag(tmp_path: Path, command: str) -> None:
    # a flag's value shows in every user's process list (ps): the error names the ways in
    err = one_line_error(run(command, "--metrics-token", "s3cret-tok", cwd=tmp_path))
    assert "PARCELHOOK_METRICS_TOKEN" in err and "--metrics-token-file" in err
    assert "s3cret-tok" not in err


def test_the_metrics_token_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    shown = json.loads(
        run("config", "--json", cwd=tmp_path, env={"PARCELHOOK_METRICS_TOKEN": "from-env"}).stdout
    )
    assert shown["metrics_token"] == "********"
    token_file = tmp_path / "metrics.token"
    token_file.write_text("from-file\n")
    result = run("config", "--json", "--metrics-token-file", str(token_file), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["metrics_token"] == "********"
    assert "from-file" not in result.stdout
    assert Settings(metrics_token_file=token_file).metrics_token is not None
    assert Settings(metrics_token_file=token_file).metrics_token.get_secret_value() == "from-file"

    missing = tmp_path / "nowhere.token"
    err = one_line_error(run("worker", "--metrics-token-file", str(missing), cwd=tmp_path))
    assert "--metrics-token-file / PARCELHOOK_METRICS_TOKEN_FILE" in err and "nowhere" in err
    token_file.write_text("\n")
    err = one_line_error(run("worker", "--metrics-token-file", str(token_file), cwd=tmp_path))
    assert "empty" in err
    both = run(
        "config",
        "--metrics-token-file",
        str(token_file),
        cwd=tmp_path,
        env={"PARCELHOOK_METRICS_TOKEN": "from-env"},
    )
    assert "PARCELHOOK_METRICS_TOKEN" in one_line_error(both)
