"""Everything one parcelhook process runs, wired once from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp.abc import AbstractResolver

from parcelhook import tracing
from parcelhook.alerts import FailingEndpoints, mailer_from_settings
from parcelhook.config import Settings
from parcelhook.delivery.dispatcher import Dispatcher, DispatcherConfig
from parcelhook.delivery.headers import USER_AGENT
from parcelhook.delivery.observe import DeliveryObserver
from parcelhook.delivery.proxy import Proxies
from parcelhook.delivery.sender import Sender, check_target_resolves
from parcelhook.delivery.transport import TransportFactory, WireTransport
from parcelhook.domain.clock import Clock, SystemClock
from parcelhook.domain.shipping import DEFAULT_CATALOGUE, load_catalogue
from parcelhook.metrics import Metrics
from parcelhook.service import Service
from parcelhook.store import Store, masterkey
from parcelhook.supervision import Backoff, Health, watch

log = logging.getLogger("parcelhook")
# how often dispatching processes look for failing endpoints to report or turn off
FAILING_CHECK_S = 60.0
# the pruner's pause when there is nothing to prune
PRUNE_IDLE_S = 60.0


class Runtime:
    """Store, service, and (unless turned off) the dispatcher with its own sender.

    `transport` and `resolver` are what both senders reach endpoints through (tests swap
    them: a `parcelhook.testing.MockTransport`, a resolver with their own DNS)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        *,
        tracer_provider: Any = None,
        transport: TransportFactory = WireTransport,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self._transport = transport
        self._resolver = resolver
        # loaded once: the store's encryption and the panel's session signing derive from it
        self.keys = masterkey.key_source(settings)
        self.master_key = self.keys.keys[0]
        box = masterkey.box_for(self.keys)
        self.store = Store.open(settings.database_url, box)
        # the Test button's sender is separate so a test never waits behind deliveries
        self.test_sender = Sender(
            timeout=settings.timeout,
            allow_private=settings.allow_private_targets,
            allow_http=settings.allow_http_targets,
            user_agent=USER_AGENT,
            resolver=resolver,
            transport=transport,
            ssl_context=tls_context(settings),
            proxies=Proxies.from_environment(),
        )
        self.service = Service(
            self.store,
            self.clock,
            settings.target_policy,
            self.test_sender,
            check_target=check_target_resolves,
            secret_grace_ms=int(settings.secret_grace_hours * 3600 * 1000),
            public_url=settings.public_url or f"http://{settings.host}:{settings.port}",
            shipping_methods=(
                load_catalogue(settings.shipping_methods_file.read_text())
                if settings.shipping_methods_file
                else DEFAULT_CATALOGUE
            ),
        )
        self.dispatcher: Dispatcher | None = None
        # PostgreSQL's LISTEN connection's task, while the dispatcher runs
        self.listener: asyncio.Task[None] | None = None
        self.metrics = Metrics()
        self.failing = FailingEndpoints(
            self.store, settings, mailer_from_settings(settings), self.metrics
        )
        # an OpenTelemetry tracer when tracing is configured (or a provider given), else None
        self.tracer = (
            tracing.tracer_from_provider(tracer_provider)
            if tracer_provider is not None
            else tracing.tracer_from_settings(settings)
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # every long-running loop's last good turn, for /healthz
        self.health = Health(self.clock.now_ms)
        # called with a loop's name when one ends while the process runs (a bug): the
        # command line makes the process exit non-zero, so its supervisor restarts it
        self.on_fatal: Callable[[str], None] | None = None

    async def prepare(self) -> None:
        """Bring the schema up to date and refuse a master key that is not the database's."""
        await self.store.migrate(self.clock.now_ms())
        await masterkey.check(self.store, self.keys)

    async def start(self, *, migrate: bool = True) -> None:
        if migrate:
            await self.prepare()
        if self.settings.dispatcher:
            await self.start_dispatcher()

    async def start_dispatcher(self) -> Dispatcher:
        s = self.settings
        sender = Sender(
            timeout=s.timeout,
            allow_private=s.allow_private_targets,
            allow_http=s.allow_http_targets,
            user_agent=USER_AGENT,
            # no global cap: lanes bound connections per endpoint, and a shared cap would
            # let black-holed endpoints starve healthy ones of connections
            max_connections=0,
            resolver=self._resolver,
            transport=self._transport,
            ssl_context=tls_context(s),
            proxies=Proxies.from_environment(),
        )
        await sender.start()
        self.dispatcher = Dispatcher(
            self.store.queue,
            sender,
            self.clock,
            policy=s.retry,
            config=DispatcherConfig(
                lane_concurrency=s.endpoint_concurrency,
                lease_ms=int(s.lease_seconds * 1000),
                poll_ms=int(s.poll_seconds * 1000),
            ),
            observer=DeliveryObserver(self.metrics, self.tracer),
            health=self.health,
        )
        d = self.dispatcher
        self.metrics.watch_dispatcher(lambda: d.lanes_in_use, lambda: d.in_flight)
        self.store.on_enqueue(self.dispatcher.wake)
        self.listener = self.store.listen(self.dispatcher.wake, self.health.loop("listener"))
        if self.listener is not None:
            # the store runs it (and ends it at close); its end before that is fatal too
            watch(self.listener, "listener", stopping=self._stop.is_set, on_fatal=self._fatal)
        self.supervise("dispatcher", self.dispatcher.run(self._stop))
        self.supervise("pruner", self._prune_forever())
        self.supervise("failing-endpoint check", self._check_failing_forever())
        return self.dispatcher

    def supervise(self, name: str, loop: Coroutine[Any, Any, None]) -> None:
        """Run `loop` as a task of this process; its end while the process runs is fatal."""
        task = asyncio.create_task(loop, name=name)
        self._tasks.append(task)
        watch(task, name, stopping=self._stop.is_set, on_fatal=self._fatal)

    def _fatal(self, name: str) -> None:
        self.health.fatal = name
        if self.on_fatal is not None:
            self.on_fatal(name)

    async def prune_once(self, batch: int = 500) -> int:
        """Drop one batch of settled payloads and attempts older than the retention period."""
        cutoff = self.clock.now_ms() - int(self.settings.retention_days * 86_400_000)
        return await self.store.prune(cutoff, batch)

    async def _prune_forever(self) -> None:
        # small batches with pauses between them, so pruning never holds up delivery
        health = self.health.loop("pruner", turns_every_ms=int(PRUNE_IDLE_S * 1000))
        backoff = Backoff(first_s=1.0, cap_s=PRUNE_IDLE_S)
        while not self._stop.is_set():
            try:
                pruned = await self.prune_once()
                health.ok()
                pause = 0.1 if pruned else PRUNE_IDLE_S
            except Exception as exc:
                pause = backoff.delay(health.failed(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), pause)

    async def _check_failing_forever(self) -> None:
        while not self._stop.is_set():
            try:
                await self.failing.check_once(self.clock.now_ms())
            except Exception:
                log.exception("the failing-endpoint check failed; trying again later")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), FAILING_CHECK_S)

    async def stop(self) -> None:
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.dispatcher is not None:
            await self.dispatcher.sender.close()
        await self.test_sender.close()
        with contextlib.suppress(Exception):
            await self.store.close()


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Whom https endpoints must prove they are, and who we are to them: the system's CAs
    plus the operator's bundle, and a client certificate when one is configured (None: the
    sender's default, the system's CAs alone)."""
    if settings.ca_bundle is None and settings.client_cert is None:
        return None
    context = ssl.create_default_context()
    if settings.ca_bundle is not None:
        context.load_verify_locations(cafile=settings.ca_bundle)  # adds to the system's
    if settings.client_cert is not None:
        context.load_cert_chain(settings.client_cert, settings.client_key)
    return context
