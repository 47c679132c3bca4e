"""The `parcelhook` command line. Errors are one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import click
from pydantic import ValidationError

from parcelhook import __version__
from parcelhook.config import NO_FLAG, Settings, SettingsError, describe_error, env_name, flag
from parcelhook.domain.errors import DomainError
from parcelhook.store.crypto import MasterKeyError

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
    except (SettingsError, MasterKeyError) as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, ConnectionError) as exc:
        words = f"{type(exc).__name__}: {exc.strerror or exc}"
        if exc.filename:
            words += f": {exc.filename}"
        elif isinstance(exc, ConnectionError | socket.gaierror | TimeoutError):
            # at start the network's only peer is the database
            words += " (is the database at --database-url / PARCELHOOK_DATABASE_URL reachable?)"
        raise click.ClickException(words) from None
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        # database drivers raise their own types; name them without a traceback
        words = str(exc).splitlines()[0] if str(exc) else ""
        raise click.ClickException(f"{type(exc).__name__}: {words}"[:500]) from None


def settings_options(*fields: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Click options for these settings: `--flag`, shown by --help with its variable and
    default. Unset flags stay None, so the variable, the .env file or the default applies.
    A secret that once was a flag is refused with the ways to give it instead."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(fields):
            f = _option(name)(f)
        if "metrics_token_file" not in fields:
            return f
        return _refused_flag(
            "metrics_token",
            f"or in a file named by {flag('metrics_token_file')} / "
            f"{env_name('metrics_token_file')}",
        )(f)

    return decorate


def _refused_flag(name: str, instead: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def refuse(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
        if value is not None:
            # a flag's value shows in every user's process list (ps)
            raise click.ClickException(
                f"{flag(name)} is no longer accepted: a secret on the command line shows in "
                f"the process list. Set {env_name(name)} (environment or .env) {instead}"
            )

    return click.option(flag(name), hidden=True, expose_value=False, callback=refuse)


def _option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    info = Settings.model_fields[name]
    default = info.default
    shown = "" if default in (None, "") else f"; default {default}"
    help_text = f"{info.description} [env {env_name(name)}{shown}]"
    annotation = info.annotation
    kind: Any = None
    if annotation is bool:
        return click.option(
            f"{flag(name)}/--no-{flag(name)[2:]}", name, default=None, help=help_text
        )
    if get_origin(annotation) is Literal:
        kind = click.Choice(get_args(annotation))
    else:
        base = [a for a in get_args(annotation) if a is not type(None)] or [annotation]
        kind = {int: click.INT, float: click.FLOAT, Path: click.Path(path_type=Path)}.get(
            base[0], click.STRING
        )
    return click.option(flag(name), name, type=kind, default=None, help=help_text)


STORAGE = ("database_url", "key_file")
LOGS = ("log_level", "log_format")
DELIVERY = (
    "allow_private_targets",
    "allow_http_targets",
    "timeout",
    "retry_first",
    "retry_cap",
    "retries",
    "endpoint_concurrency",
    "lease_seconds",
    "poll_seconds",
    "ca_bundle",
    "client_cert",
    "client_key",
    "retention_days",
    "alert_after_hours",
    "disable_after_days",
    "smtp_host",
    "smtp_port",
    "smtp_username",
    "smtp_from",
    "smtp_tls",
    "otlp_endpoint",
)
SERVE = (
    "host",
    "port",
    "workers",
    "dispatcher",
    "public_url",
    "forwarded_allow_ips",
    "secure_cookies",
    "secret_grace_hours",
    "shipping_methods_file",
    "metrics_token_file",
)
WORKER = ("host", "http_port", "metrics_token_file")
ALL = tuple(n for n in Settings.model_fields if n not in NO_FLAG and n != "retry")


def build_settings(**flags: Any) -> Settings:
    """The settings, once: flags over PARCELHOOK_* variables over .env over defaults."""
    given = {k: v for k, v in flags.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise click.ClickException(describe_error(exc)) from None


def _logging(settings: Settings) -> None:
    from parcelhook.logs import configure

    configure(settings.log_level, settings.log_format)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="parcelhook")
def main() -> None:
    """parcelhook: webhook feedback for shipping platforms (Sendcloud-compatible).

    Every setting is a flag, a PARCELHOOK_* environment variable (the flag's name in
    capitals) or a line in a .env file; flags win. `parcelhook config` shows the result.
    """


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


def _listen(host: str, port: int) -> socket.socket:
    """Bind the server's socket before anything else starts, or say which setting to fix."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise click.ClickException(
            f"cannot resolve host {host!r}: fix --host / PARCELHOOK_HOST"
        ) from None
    family, _, proto, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise click.ClickException(
            f"cannot listen on {host}:{port} ({exc.strerror}): choose another port with "
            "--port / PARCELHOOK_PORT (or another address with --host / PARCELHOOK_HOST)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@main.command()
@settings_options(*SERVE, *STORAGE, *DELIVERY, *LOGS)
@click.option(
    "--demo/--no-demo",
    default=False,
    envvar="PARCELHOOK_DEMO",
    help="Create a demo account (first run) and print how to sign in; for trying parcelhook "
    "locally, never in production. [env PARCELHOOK_DEMO]",
)
def serve(demo: bool, **flags: Any) -> None:
    """Run the API, the panel and the dispatcher in one process (or --workers of them).

    Secrets are never flags: PARCELHOOK_MASTER_KEY, PARCELHOOK_PREVIOUS_MASTER_KEYS,
    PARCELHOOK_SMTP_PASSWORD and PARCELHOOK_METRICS_TOKEN (or --metrics-token-file) come
    from the environment or a .env file.
    """
    settings = build_settings(**flags)
    _logging(settings)
    if settings.workers > 1 and settings.single_writer:
        raise click.UsageError(
            "--workers needs PostgreSQL: SQLite lets one process write at a time, so more "
            "processes would only queue for its lock; on SQLite one process is the right shape."
        )
    # first: a busy port is found before anything migrates or starts
    sock = _listen(settings.host, settings.port)
    _warn_targets(settings)
    proxy = proxy_trust(settings.forwarded_allow_ips)
    if settings.workers > 1:
        # uvicorn binds the port in each worker process itself
        sock.close()
        _serve_workers(settings, demo, proxy)
        return

    async def go() -> None:
        import uvicorn

        from parcelhook.app import create_app
        from parcelhook.http_protocol import HttpProtocol
        from parcelhook.runtime import Runtime

        runtime = Runtime(settings)
        await runtime.prepare()
        if demo:
            await _ensure_demo(runtime)
        config = uvicorn.Config(
            create_app(runtime),
            http=HttpProtocol,
            log_level=settings.log_level,
            log_config=None,
            access_log=settings.log_level == "debug",
            lifespan="on",
            **proxy,
        )
        server = uvicorn.Server(config)
        host, port = sock.getsockname()[:2]
        # a loop that ended is a bug: stop serving and exit non-zero, so that the process
        # supervisor (systemd, Docker, Kubernetes) starts a whole parcelhook again
        runtime.on_fatal = lambda _name: setattr(server, "should_exit", True)
        click.echo(f"parcelhook {__version__} serving on http://{host}:{port}")
        await server.serve(sockets=[sock])
        _exit_if_fatal(runtime.health.fatal)

    _run(go)


def _serve_workers(settings: Settings, demo: bool, proxy: dict[str, Any]) -> None:
    """`settings.workers` uvicorn processes on one socket, each with its own runtime."""
    import uvicorn

    from parcelhook import asgi
    from parcelhook.http_protocol import HttpProtocol

    async def prepare() -> None:
        from parcelhook.runtime import Runtime

        runtime = Runtime(settings)  # not started: no dispatcher in this process
        try:
            await runtime.prepare()
            if demo:
                await _ensure_demo(runtime)
        finally:
            await runtime.stop()

    _run(prepare)
    asgi.hand_down(settings, settings.log_level)
    click.echo(
        f"parcelhook {__version__} serving on http://{settings.host}:{settings.port} "
        f"with {settings.workers} worker processes"
    )
    uvicorn.run(
        "parcelhook.asgi:app_from_environment",
        factory=True,
        http=HttpProtocol,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        access_log=settings.log_level == "debug",
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
@settings_options(*WORKER, *STORAGE, *DELIVERY, *LOGS)
def worker(**flags: Any) -> None:
    """Run the dispatcher alone (scale-out on PostgreSQL).

    Secrets are never flags: PARCELHOOK_MASTER_KEY, PARCELHOOK_PREVIOUS_MASTER_KEYS,
    PARCELHOOK_SMTP_PASSWORD and PARCELHOOK_METRICS_TOKEN (or --metrics-token-file) come
    from the environment or a .env file.
    """
    settings = build_settings(**flags, dispatcher=True)
    _logging(settings)
    sock = _listen(settings.host, settings.http_port) if settings.http_port is not None else None
    _warn_targets(settings)

    async def go() -> None:
        from parcelhook.runtime import Runtime

        runtime = Runtime(settings)
        stop = asyncio.Event()
        runtime.on_fatal = lambda _name: stop.set()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await runtime.start()
        server = None
        if sock is not None:
            from parcelhook.ops_http import serve_ops

            server = await serve_ops(runtime, sock)
        click.echo(
            f"parcelhook worker {runtime.dispatcher.owner if runtime.dispatcher else ''}"
            " dispatching; Ctrl-C stops",
            err=True,
        )
        try:
            await stop.wait()
        finally:
            if server is not None:
                await server.stop()
            await runtime.stop()
        _exit_if_fatal(runtime.health.fatal)

    _run(go)


def _exit_if_fatal(loop_name: str | None) -> None:
    if loop_name is not None:
        raise click.ClickException(
            f"the {loop_name} loop ended; exiting so that a supervisor restarts parcelhook"
        )


@main.command()
@click.option(
    "--sql",
    "as_sql",
    is_flag=True,
    help="Print the SQL that would bring the database up to date, and change nothing.",
)
@settings_options("database_url")
def migrate(as_sql: bool, **flags: Any) -> None:
    """Bring the database schema up to date (Alembic revisions)."""
    settings = build_settings(**flags)
    if as_sql:
        from parcelhook.store import migrations

        click.echo(_run(lambda: migrations.pending_sql(settings.database_url)), nl=False)
        return

    async def go() -> list[str]:
        from parcelhook.store.crypto import SecretBox
        from parcelhook.store.store import Store

        # no master key needed to change the schema
        store = Store.open(settings.database_url, SecretBox.locked())
        try:
            return await store.migrate()
        finally:
            await store.close()

    applied = _run(go)
    click.echo(f"applied revisions {', '.join(applied)}" if applied else "schema is up to date")


@main.group()
def account() -> None:
    """Manage accounts."""


@account.command("create")
@click.option("--email", required=True)
@click.option("--password", required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@settings_options(*STORAGE)
def account_create(email: str, password: str, as_json: bool, **flags: Any) -> None:
    """Create an account with its first API integration and print its keys."""
    settings = build_settings(**flags, dispatcher=False)

    async def go() -> Any:
        from parcelhook.runtime import Runtime

        runtime = Runtime(settings)
        try:
            await runtime.prepare()
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
@settings_options(*STORAGE)
def import_tracking(file: Path, email: str, batch: int, **flags: Any) -> None:
    """Apply carrier tracking updates from FILE (CSV with a header, or JSON lines).

    Each status change sends `parcel_status_changed` as the API's would. Lines that fail
    are listed on stderr (and the exit status is 1); the others are applied.
    """
    from parcelhook.domain.errors import NotFound
    from parcelhook.tools import tracking_file

    settings = build_settings(**flags, dispatcher=False)
    with file.open(encoding="utf-8", newline="") as f:
        as_csv = tracking_file.is_csv(file, f.read(4096))
    total = max(tracking_file.count_lines(file) - (1 if as_csv else 0), 0)

    async def go() -> dict[str, int]:
        from parcelhook.runtime import Runtime

        runtime = Runtime(settings)
        counts = {"changed": 0, "unchanged": 0, "failed": 0}
        try:
            await runtime.prepare()
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


@main.group()
def keys() -> None:
    """The master key that encrypts stored secrets."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new master key (for PARCELHOOK_MASTER_KEY or a key file)."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode("ascii"))


@keys.command("rotate")
@settings_options(*STORAGE)
def keys_rotate(**flags: Any) -> None:
    """Re-encrypt every stored secret under a new master key; resumable, safe while serving.

    With a key file, a new key is generated and written first in the file (the old one
    stays after it, so running servers still open everything). With PARCELHOOK_MASTER_KEY,
    set it to the new key and PARCELHOOK_PREVIOUS_MASTER_KEYS to the old one, restart the
    servers with both, then run this.
    """
    settings = build_settings(**flags, dispatcher=False)

    async def go() -> tuple[int, str]:
        from cryptography.fernet import Fernet

        from parcelhook.store import masterkey, meta
        from parcelhook.store.crypto import fingerprint
        from parcelhook.store.store import Store

        source = masterkey.key_source(settings, create=False)
        store = Store.open(settings.database_url, masterkey.box_for(source))
        try:
            await store.migrate()
            await masterkey.check(store, source)
            if source.file is not None:
                resuming = await meta.get(store, masterkey.ROTATING_TO)
                if resuming != fingerprint(source.keys[0]):
                    new = Fernet.generate_key()
                    # the file first, then the database: a crash in between leaves a key
                    # no secret uses yet, never a secret no key opens
                    masterkey.write_key_file(source.file, [new, *source.keys])
                    await meta.put(store, masterkey.ROTATING_TO, fingerprint(new))
                    source = masterkey.KeySource([new, *source.keys], source.where, source.file)
            elif len(source.keys) < 2:
                raise MasterKeyError(
                    "to rotate a key given in PARCELHOOK_MASTER_KEY, set it to the new key and "
                    "PARCELHOOK_PREVIOUS_MASTER_KEYS to the old one (restart the servers with "
                    "both), then run keys rotate again"
                )

            def progress(done: int, total: int) -> None:
                click.echo(f"\rre-encrypted the secrets of {done}/{total} integrations", nl=False)

            changed = await masterkey.rotate(store, source, progress=progress)
            if source.file is not None:
                # the old key stays as a fallback until the next rotation
                masterkey.write_key_file(source.file, source.keys[:2])
            return changed, fingerprint(source.keys[0])
        finally:
            await store.close()

    changed, fp = _run(go)
    click.echo(f"\n{changed} integrations re-encrypted; the database's master key is now {fp}")


@main.command("config")
@settings_options(*ALL)
@click.option("--json", "as_json", is_flag=True, help="Print the settings as JSON.")
def config_command(as_json: bool, **flags: Any) -> None:
    """Show the effective settings (flags, PARCELHOOK_* variables, .env), secrets masked."""
    shown = build_settings(**flags).shown()
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    width = max(len(env_name(n)) for n in shown)
    for name, value in shown.items():
        click.echo(f"{env_name(name):<{width}}  {'' if value is None else value}")


def _register_tools() -> None:
    with contextlib.suppress(ImportError):
        from parcelhook.tools.listen import listen_command
        from parcelhook.tools.trigger import trigger_command

        main.add_command(trigger_command, "trigger")
        main.add_command(listen_command, "listen")


_register_tools()

if __name__ == "__main__":
    main()
