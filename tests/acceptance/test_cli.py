"""The command line in a subprocess: help, accounts, migrations, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

EXE = [sys.executable, "-m", "parcelhook.cli"]


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PARCELHOOK_KEY_FILE": str(cwd / "k.key"), **(env or {})}
    return subprocess.run(
        [*EXE, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "command",
    [[], ["serve"], ["worker"], ["migrate"], ["account", "create"], ["trigger"], ["listen"]],
)
def test_help_on_every_command(tmp_path: Path, command: list[str]) -> None:
    result = run(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_account_create_json_then_migrate_is_a_no_op(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'x.db'}"
    result = run(
        "account",
        "create",
        "--email",
        "m@example.com",
        "--password",
        "secret123",
        "--json",
        "--database-url",
        db,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert set(created) == {"account_id", "integration_id", "public_key", "secret_key"}
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    again = run("migrate", "--database-url", db, cwd=tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout
    dup = run(
        "account",
        "create",
        "--email",
        "m@example.com",
        "--password",
        "secret123",
        "--database-url",
        db,
        cwd=tmp_path,
    )
    assert dup.returncode != 0
    assert dup.stderr.strip().count("\n") == 0 and "already exists" in dup.stderr
    assert "Traceback" not in dup.stderr


def test_unreachable_database_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = run(
        "migrate", "--database-url", "postgresql://nobody:hunter2@127.0.0.1:1/x", cwd=tmp_path
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0
    assert "hunter2" not in result.stderr


def test_master_key_from_the_environment_writes_no_key_file(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'y.db'}"
    env = {"PARCELHOOK_MASTER_KEY": Fernet.generate_key().decode()}
    result = run(
        "account",
        "create",
        "--email",
        "n@example.com",
        "--password",
        "secret123",
        "--database-url",
        db,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "k.key").exists()


def test_serve_logs_no_sql_at_info(tmp_path: Path) -> None:
    """The default log level speaks of the service, not of every statement it runs."""
    db = f"sqlite:///{tmp_path / 'z.db'}"
    proc = subprocess.Popen(
        [*EXE, "serve", "--demo", "--port", "0", "--database-url", db],
        cwd=tmp_path,
        env={**os.environ, "PARCELHOOK_KEY_FILE": str(tmp_path / "k.key"), "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    # until it serves (bounded: a loaded machine starts slowly), then a moment of serving
    out, deadline = "", time.monotonic() + 60
    while "serving on" not in out and proc.poll() is None and time.monotonic() < deadline:
        out += proc.stdout.readline()
    time.sleep(1)
    proc.terminate()
    rest, err = proc.communicate(timeout=20)
    out += rest
    assert "serving on" in out and "demo@parcelhook.local" in out
    assert "sqlalchemy" not in err and "SELECT" not in err and "BEGIN" not in err, err[:2000]
