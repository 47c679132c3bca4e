"""The `parcelhook` command line. Errors are one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from parcelhook import __version__
from parcelhook.config import DEFAULT_DATABASE_URL, Settings
from parcelhook.domain.errors import DomainError
from parcelhook.domain.retry import RetryPolicy

T = TypeVar("T")
DEMO_EMAIL = "demo@parcelhook.local"


def _run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main`, turning every failure into one line on stderr and exit code 1."""
    try:
        # uvloop takes ~8 % off the dispatcher's CPU per delivery (docs/performance.md)
        if sys.platform != "win32":
            import uvloop

            return uvloop.run(main())
        return asyncio.run(main())
    except DomainError as exc:
        raise click.ClickException(exc.message) from None
    except (OSError, ConnectionError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # database drivers raise their own types; name them without a traceback
        words = str(exc).splitlines()[0] if str(exc) else ""
        raise click.ClickException(f"{type(exc).__name__}: {words}"[:500]) from None


def _database_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--database-url",
        envvar="PARCELHOOK_DATABASE_URL",
        default=DEFAULT_DATABASE_URL,
        show_default=True,
        help="sqlite:///FILE or postgresql://USER@HOST/DB.",
    )(f)


def _settings(database_url: str, **overrides: Any) -> Settings:
    import os

    key_file = Path(os.environ.get("PARCELHOOK_KEY_FILE", "parcelhook.key"))
    return Settings(
        database_url=database_url,
        master_key=os.environ.get("PARCELHOOK_MASTER_KEY") or None,
        key_file=key_file,
        **overrides,
    )


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # drivers log every statement (SQLAlchemy at INFO, aiosqlite with its parameters at
    # DEBUG: ciphertexts, hashes, payloads), so they speak only of trouble
    for driver in ("aiosqlite", "asyncpg", "sqlalchemy.engine"):
        logging.getLogger(driver).setLevel(logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="parcelhook")
def main() -> None:
    """parcelhook: webhook feedback for shipping platforms (Sendcloud-compatible)."""


def _delivery_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--allow-private-targets",
            is_flag=True,
            envvar="PARCELHOOK_ALLOW_PRIVATE_TARGETS",
            help="Let webhooks reach loopback and private addresses (local use only).",
        ),
        click.option(
            "--allow-http-targets",
            is_flag=True,
            envvar="PARCELHOOK_ALLOW_HTTP_TARGETS",
            help="Accept plain http:// webhook URLs (local use only).",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(0.1, 120),
            default=10.0,
            envvar="PARCELHOOK_TIMEOUT",
            show_default=True,
            help="Seconds an endpoint has to answer.",
        ),
        click.option(
            "--retry-first",
            type=click.FloatRange(0.001),
            default=300.0,
            envvar="PARCELHOOK_RETRY_FIRST",
            show_default=True,
            help="Seconds before the first retry; each retry doubles it.",
        ),
        click.option(
            "--retry-cap",
            type=click.FloatRange(0.001),
            default=3600.0,
            envvar="PARCELHOOK_RETRY_CAP",
            show_default=True,
            help="Longest wait between retries, in seconds.",
        ),
        click.option(
            "--retries",
            type=click.IntRange(0, 100),
            default=10,
            envvar="PARCELHOOK_RETRIES",
            show_default=True,
        ),
        click.option(
            "--endpoint-concurrency",
            type=click.IntRange(1, 1024),
            default=16,
            envvar="PARCELHOOK_ENDPOINT_CONCURRENCY",
            show_default=True,
            help="Requests one endpoint may have in flight at once.",
        ),
        click.option(
            "--lease-seconds",
            type=click.FloatRange(1, 3600),
            default=120.0,
            envvar="PARCELHOOK_LEASE_SECONDS",
            show_default=True,
            help="How long a claimed delivery stays with this process; a crashed process's "
            "deliveries are taken over after it. Must exceed --timeout.",
        ),
        click.option(
            "--poll-seconds",
            type=click.FloatRange(0.05, 60),
            default=1.0,
            envvar="PARCELHOOK_POLL_SECONDS",
            show_default=True,
            help="Fallback poll when no wake-up arrives.",
        ),
        click.option(
            "--log-level",
            default="info",
            envvar="PARCELHOOK_LOG_LEVEL",
            type=click.Choice(["debug", "info", "warning", "error"]),
        ),
        _database_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _delivery_settings(database_url: str, **kw: Any) -> Settings:
    retry = RetryPolicy.exponential(
        first=kw.pop("retry_first"), cap=kw.pop("retry_cap"), retries=kw.pop("retries")
    )
    kw.pop("log_level", None)
    return _settings(
        database_url,
        allow_private_targets=kw.pop("allow_private_targets"),
        allow_http_targets=kw.pop("allow_http_targets"),
        timeout=kw.pop("timeout"),
        endpoint_concurrency=kw.pop("endpoint_concurrency"),
        retry=retry,
        lease_seconds=kw.pop("lease_seconds"),
        poll_seconds=kw.pop("poll_seconds"),
        **kw,
    )


def _warn_targets(settings: Settings) -> None:
    if settings.allow_private_targets:
        click.secho(
            "warning: webhooks may reach private and loopback addresses "
            "(--allow-private-targets); never do this in production",
            fg="yellow",
            err=True,
        )
    if settings.allow_http_targets:
        click.secho(
            "warning: plain http:// webhook URLs are accepted (--allow-http-targets)",
            fg="yellow",
            err=True,
        )


@main.command()
@click.option("--host", default="127.0.0.1", envvar="PARCELHOOK_HOST", show_default=True)
@click.option(
    "--port",
    default=8000,
    type=click.IntRange(0, 65535),
    envvar="PARCELHOOK_PORT",
    show_default=True,
)
@click.option("--no-dispatcher", is_flag=True, help="Serve API and panel only (workers deliver).")
@click.option(
    "--forwarded-allow-ips",
    default="",
    envvar="PARCELHOOK_FORWARDED_ALLOW_IPS",
    help="Comma-separated addresses of reverse proxies whose X-Forwarded-For/-Proto to trust "
    "(default: none, not even loopback).",
)
@click.option(
    "--demo/--no-demo",
    default=True,
    show_default=True,
    help="Create the demo account if the database has none, and print how to sign in.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    envvar="PARCELHOOK_WORKERS",
    show_default=True,
    help="Processes serving on the port (PostgreSQL only); each runs a dispatcher too "
    "unless --no-dispatcher.",
)
@_delivery_options
def serve(
    host: str,
    port: int,
    no_dispatcher: bool,
    forwarded_allow_ips: str,
    demo: bool,
    workers: int,
    log_level: str,
    **kw: Any,
) -> None:
    """Run the API, the panel and the dispatcher in one process (or --workers of them)."""
    _logging(log_level)
    settings = _delivery_settings(host=host, port=port, dispatcher=not no_dispatcher, **kw)
    if workers > 1 and settings.database_url.startswith("sqlite"):
        raise click.UsageError(
            "--workers needs PostgreSQL: SQLite lets one process write at a time, so more "
            "processes would only queue for its lock; on SQLite one process is the right shape."
        )
    _warn_targets(settings)
    if workers > 1:
        _serve_workers(settings, workers, demo, log_level, proxy_trust(forwarded_allow_ips))
        return

    async def go() -> None:
        import uvicorn

        from parcelhook.app import create_app
        from parcelhook.runtime import Runtime

        runtime = Runtime(settings)
        await runtime.store.migrate(runtime.clock.now_ms())
        if demo:
            await _ensure_demo(runtime)
        config = uvicorn.Config(
            create_app(runtime),
            host=host,
            port=port,
            log_level=log_level,
            access_log=log_level == "debug",
            lifespan="on",
            **proxy_trust(forwarded_allow_ips),
        )
        server = uvicorn.Server(config)
        click.echo(f"parcelhook {__version__} serving on http://{host}:{port}")
        await server.serve()

    _run(go)


def _serve_workers(
    settings: Settings, workers: int, demo: bool, log_level: str, proxy: dict[str, Any]
) -> None:
    """`workers` uvicorn processes on one socket, each with its own runtime."""
    import uvicorn

    from parcelhook import asgi

    async def prepare() -> None:
        from parcelhook.runtime import Runtime

        runtime = Runtime(settings)  # not started: no dispatcher in this process
        try:
            await runtime.store.migrate(runtime.clock.now_ms())
            if demo:
                await _ensure_demo(runtime)
        finally:
            await runtime.stop()

    _run(prepare)
    asgi.hand_down(settings, log_level)
    click.echo(
        f"parcelhook {__version__} serving on http://{settings.host}:{settings.port} "
        f"with {workers} worker processes"
    )
    uvicorn.run(
        "parcelhook.asgi:app_from_environment",
        factory=True,
        workers=workers,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=log_level == "debug",
        lifespan="on",
        **proxy,
    )


def proxy_trust(forwarded_allow_ips: str) -> dict[str, Any]:
    """uvicorn's settings for trusting these proxies' forwarding headers, and no one else's.

    uvicorn trusts loopback by default: any local process (a sidecar, another tenant's
    container on the host network) could then choose the client address that the sign-in
    throttle counts by."""
    trusted = ",".join(a.strip() for a in forwarded_allow_ips.split(",") if a.strip())
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted}


async def _ensure_demo(runtime: Any) -> None:
    """The first run's demo account; later runs give it a fresh password and print it."""
    from parcelhook.runtime import Runtime

    assert isinstance(runtime, Runtime)
    password = secrets.token_urlsafe(12)
    async with runtime.store.reading() as r:
        found = await r.account_by_email(DEMO_EMAIL)
    if found is None:
        created = await runtime.service.create_account(DEMO_EMAIL, password)
        integration = created.integration
    else:
        await runtime.service.set_password(found[0], password)
        integration = (await runtime.service.list_integrations(found[0], limit=1))[0]
    click.echo(
        "\n  Demo account (sign in at the panel):\n"
        f"    e-mail:     {DEMO_EMAIL}\n"
        f"    password:   {password}\n"
        f"  API keys of its integration {integration.id} (HTTP Basic):\n"
        f"    public_key: {integration.public_key}\n"
        f"    secret_key: {integration.secret_key}\n"
    )


@main.command()
@_delivery_options
def worker(log_level: str, **kw: Any) -> None:
    """Run the dispatcher alone (scale-out on PostgreSQL)."""
    _logging(log_level)
    settings = _delivery_settings(**kw)
    _warn_targets(settings)

    async def go() -> None:
        from parcelhook.runtime import Runtime

        runtime = Runtime(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runtime.start()
        click.echo(
            f"parcelhook worker {runtime.dispatcher.owner if runtime.dispatcher else ''}"
            " dispatching; Ctrl-C stops",
            err=True,
        )
        try:
            await stop.wait()
        finally:
            await runtime.stop()

    _run(go)


@main.command()
@click.option(
    "--sql",
    "as_sql",
    is_flag=True,
    help="Print the SQL that would bring the database up to date, and change nothing.",
)
@_database_option
def migrate(as_sql: bool, database_url: str) -> None:
    """Bring the database schema up to date (Alembic revisions)."""
    if as_sql:
        click.echo(_run(lambda: _pending_sql(database_url)), nl=False)
        return
    settings = _settings(database_url, dispatcher=False)

    async def go() -> list[str]:
        from parcelhook.runtime import Runtime

        runtime = Runtime(settings)
        try:
            return await runtime.store.migrate()
        finally:
            await runtime.stop()

    applied = _run(go)
    click.echo(f"applied revisions {', '.join(applied)}" if applied else "schema is up to date")


async def _pending_sql(database_url: str) -> str:
    """The offline SQL from the database's revision (when it exists) to the latest."""
    from sqlalchemy.engine import make_url

    from parcelhook.store import migrations
    from parcelhook.store.engine import normalise_url

    url = normalise_url(database_url)
    since = None
    sqlite_file = make_url(url).database if url.startswith("sqlite") else None
    # reading SQLite's revision would create an empty file where there was none
    if sqlite_file is None or await asyncio.to_thread(Path(sqlite_file).exists):
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(url)
        try:
            since = await migrations.current(engine)
        finally:
            await engine.dispose()
    return migrations.offline_sql(url, since)


@main.group()
def account() -> None:
    """Manage accounts."""


@account.command("create")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_database_option
def account_create(email: str, password: str, as_json: bool, database_url: str) -> None:
    """Create an account with its first API integration and print its keys."""
    settings = _settings(database_url, dispatcher=False)

    async def go() -> Any:
        from parcelhook.runtime import Runtime

        runtime = Runtime(settings)
        try:
            await runtime.store.migrate(runtime.clock.now_ms())
            return await runtime.service.create_account(email, password)
        finally:
            await runtime.stop()

    created = _run(go)
    i = created.integration
    if as_json:
        click.echo(
            json.dumps(
                {
                    "account_id": created.account_id,
                    "integration_id": i.id,
                    "public_key": i.public_key,
                    "secret_key": i.secret_key,
                }
            )
        )
    else:
        click.echo(
            f"account {created.account_id} created; sign in as {email}\n"
            f"integration {i.id}: public_key {i.public_key} secret_key {i.secret_key}"
        )


@main.command("import-tracking")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--account", "email", required=True, help="E-mail of the account the parcels are of.")
@click.option(
    "--batch",
    type=click.IntRange(1, 1000),
    default=1000,
    show_default=True,
    help="Updates per transaction.",
)
@_database_option
def import_tracking(file: Path, email: str, batch: int, database_url: str) -> None:
    """Apply carrier tracking updates from FILE (CSV with a header, or JSON lines).

    Each status change sends `parcel_status_changed` as the API's would. Lines that fail
    are listed on stderr (and the exit status is 1); the others are applied.
    """
    from parcelhook.domain.errors import NotFound
    from parcelhook.tools import tracking_file

    settings = _settings(database_url, dispatcher=False)
    with file.open(encoding="utf-8", newline="") as f:
        as_csv = tracking_file.is_csv(file, f.read(4096))
    total = max(tracking_file.count_lines(file) - (1 if as_csv else 0), 0)

    async def go() -> dict[str, int]:
        from parcelhook.runtime import Runtime

        runtime = Runtime(settings)
        counts = {"changed": 0, "unchanged": 0, "failed": 0}
        try:
            async with runtime.store.reading() as r:
                found = await r.account_by_email(email.strip().lower())
            if found is None:
                raise NotFound(f"No account has the e-mail {email}.")
            with (
                file.open(encoding="utf-8", newline="") as f,
                click.progressbar(length=total, label="importing", file=sys.stderr) as bar,
            ):
                lines = tracking_file.read_updates(f, as_csv)
                while True:
                    chunk = [x for _, x in zip(range(batch), lines, strict=False)]
                    if not chunk:
                        break
                    results = await runtime.service.track_many(found[0], [x for _, x in chunk])
                    for (line, _), result in zip(chunk, results, strict=True):
                        counts[result.outcome] += 1
                        if result.error is not None:
                            click.echo(f"line {line}: {result.error.message}", err=True)
                    bar.update(len(chunk))
            return counts
        finally:
            await runtime.stop()

    counts = _run(go)
    click.echo(", ".join(f"{n} {what}" for what, n in counts.items()))
    if counts["failed"]:
        sys.exit(1)


def _register_tools() -> None:
    with contextlib.suppress(ImportError):
        from parcelhook.tools.listen import listen_command
        from parcelhook.tools.trigger import trigger_command

        main.add_command(trigger_command, "trigger")
        main.add_command(listen_command, "listen")


_register_tools()

if __name__ == "__main__":
    main()
