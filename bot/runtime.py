"""Wire the edges to the lifecycle: database, Vault, Slack, timers. Used by ``serve`` and ``dev``,
and (without timers or a listener: ``attach_lifecycle``) by the command line's decisions.

Start order matters and is the order below: schema first, Vault set-up, the Slack app (auth.test
fails fast on a bad token), then the timers, whose first tick at once does what fell due while the
bot was down (revoke what expired, finish what a crash interrupted), and the HTTP/Socket Mode
listener.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import REGISTRY
from slack_bolt import App
from slack_sdk import WebClient
from sqlalchemy import Engine

from bot.audit import ensure_chain_head
from bot.config import Settings
from bot.digest import DailyDigest
from bot.digest_schedule import cron_trigger, missed_firing
from bot.errors import ConfigProblem
from bot.health import Readiness, database_check
from bot.lifecycle import AccessLifecycle, StepUpSettings
from bot.lifecycle.outbox import OutboxNotifier
from bot.logs import remember_secret
from bot.metrics import TOKEN_TTL
from bot.oncall.resolver import OnCallConfigError, build_resolver
from bot.policy import Policy
from bot.ports import Notifier, SystemClock
from bot.scheduler import DueWorkRunner, Timers
from bot.slack.app import build_app, build_web_client
from bot.slack.drain import Drain
from bot.slack.home import HomePublisher, HomeRefresher
from bot.slack.notifier import SlackNotifier
from bot.store import schema
from bot.store.db import make_engine
from bot.store.gauges import StateGauges
from bot.store.locks import make_locks
from bot.vault import ResourceGrantShape, VaultIssuer
from bot.vault_login import VaultLoginError, connect

log = logging.getLogger(__name__)

#: How long a stopping bot waits for Slack requests in flight (an approval being issued and
#: delivered). Below Kubernetes' default 30 s grace period, which ends in SIGKILL.
SHUTDOWN_GRACE = 18.0
#: Then how long it waits for a timer tick that is running (the row in hand). The two together
#: stay below the 30 s grace period, with room for the interpreter to exit.
TIMERS_GRACE = 8.0


@dataclass
class Runtime:
    app: App
    web_client: WebClient
    lifecycle: AccessLifecycle
    timers: Timers
    issuer: VaultIssuer
    readiness: Readiness
    drain: Drain = field(default_factory=Drain)
    homes: HomeRefresher | None = None
    _stopped: threading.Lock = field(default_factory=threading.Lock)
    _done: bool = False

    def stop_taking_requests(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Readiness turns false, new Slack requests are answered "try again in a minute", and
        this returns once the requests in flight have finished (or after ``grace`` seconds)."""
        self.readiness.add("shutdown", lambda: "shutting down")
        self.drain.close(grace)

    def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop in order: take no more requests and finish those in flight, then stop the timers
        (waiting for a job that is running, such as a revocation), then the Vault token keeper.
        Safe to call more than once."""
        with self._stopped:
            if self._done:
                return
            self._done = True
        self.stop_taking_requests(grace)
        self.timers.shutdown(TIMERS_GRACE)
        if self.homes is not None:
            self.homes.close()
        if self.issuer.keeper is not None:
            self.issuer.keeper.stop()
        log.info("stopped")


_exposed: list[StateGauges] = []


def _expose_gauges(gauges: StateGauges) -> None:
    """Serve ``gauges`` on ``/metrics`` (in place of an earlier runtime's, in one process)."""
    while _exposed:
        REGISTRY.unregister(_exposed.pop())
    REGISTRY.register(gauges)
    _exposed.append(gauges)


def vault_shapes(policy: Policy) -> list[ResourceGrantShape]:
    """What the Vault set-up needs of each resource: its name and its grant kind."""
    return [
        ResourceGrantShape(name=name, grant=res.grant) for name, res in policy.resources.items()
    ]


def build_issuer(settings: Settings) -> VaultIssuer:
    """Log in to Vault the way the settings say; the issuer's keeper keeps the token alive
    (call ``issuer.keeper.start()``)."""
    try:
        keeper = connect(settings)
    except VaultLoginError as exc:
        raise ConfigProblem(str(exc)) from None
    return VaultIssuer(keeper.client, keeper=keeper)


def remember_secrets(settings: Settings) -> None:
    """Mask every secret of the settings in the logs from now on."""
    for secret in (
        settings.slack_bot_token,
        settings.slack_signing_secret,
        settings.vault_token,
        settings.vault_secret_id,
        settings.slack_app_token,
        settings.pagerduty_token,
    ):
        if secret is not None:
            remember_secret(secret.get_secret_value())


def wire_lifecycle(
    settings: Settings,
    policy: Policy,
    engine: Engine,
    issuer: VaultIssuer,
    client: WebClient,
    notifier: Notifier,
) -> AccessLifecycle:
    """The lifecycle on the bot's edges (its approver directory, work locks and clock): one
    wiring for the bot and for the command line, so both decide by the same rules."""
    token = settings.pagerduty_token.get_secret_value() if settings.pagerduty_token else None
    try:
        approvers = build_resolver(policy.rotations, client, token, settings.pagerduty_api_url)
    except OnCallConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    return AccessLifecycle(
        engine=engine,
        policy=policy,
        issuer=issuer,
        notifier=notifier,
        clock=SystemClock(),
        approvers=approvers,
        locks=make_locks(engine),
        step_up=StepUpSettings(
            public_url=settings.public_url,
            link_ttl=timedelta(seconds=settings.step_up_link_ttl_seconds),
        ),
    )


@dataclass
class Attached:
    """The lifecycle of the running bot, for one action from the command line (``outbox``:
    what Slack refused, queued for the bot to send)."""

    lifecycle: AccessLifecycle
    outbox: OutboxNotifier
    engine: Engine
    issuer: VaultIssuer | None = None

    def close(self) -> None:
        self.engine.dispose()
        if self.issuer is not None and self.issuer.keeper is not None:
            self.issuer.keeper.give_up_token()


def attach_lifecycle(settings: Settings, policy: Policy, actor: str) -> Attached:
    """The bot's lifecycle on the bot's database, Vault token and Slack, with no timers, no
    listener and no set-up: the command line acts next to a running bot (or while none runs),
    and the bot's own timer tick does the rest (due work, the notices Slack refused).

    The schema is required at this release's head, never migrated from here. Every Slack call
    goes through ``OutboxNotifier``: what Slack refuses is queued, naming ``actor``."""
    remember_secrets(settings)
    engine = make_engine(settings.database_url)
    schema.require_head(engine)
    issuer = build_issuer(settings)
    client = build_web_client(settings)
    outbox = OutboxNotifier(SlackNotifier(client, policy), engine, SystemClock(), actor)
    lifecycle = wire_lifecycle(settings, policy, engine, issuer, client, outbox)
    return Attached(lifecycle=lifecycle, outbox=outbox, engine=engine, issuer=issuer)


def start_runtime(settings: Settings, policy: Policy) -> Runtime:
    """Build everything and start the timers."""
    remember_secrets(settings)
    engine = make_engine(settings.database_url)
    log.info("database schema at %s", schema.upgrade(engine))
    ensure_chain_head(engine)
    issuer = build_issuer(settings)
    keeper = issuer.keeper
    assert keeper is not None
    keeper.start()  # renew from now on: the set-up below may take a while
    report = issuer.ensure_setup(vault_shapes(policy))
    for line in report.lines():
        log.info("vault set-up: %s", line)
    client = build_web_client(settings)
    notifier = SlackNotifier(client, policy)
    lifecycle = wire_lifecycle(settings, policy, engine, issuer, client, notifier)
    clock = lifecycle.edges.clock
    homes = HomeRefresher(HomePublisher(client, lifecycle))
    notifier.homes = homes.refresh
    drain = Drain()
    app = build_app(settings, client, lifecycle, homes, drain)
    timers = Timers(
        DueWorkRunner(
            engine,
            lifecycle.due_work(),
            clock,
            also=lifecycle.periodic_work(),
            workers=1 if engine.dialect.name == "sqlite" else settings.timer_workers,
        ),
        tick=timedelta(seconds=settings.timer_tick_seconds),
    )
    if policy.digest is not None:
        daily = DailyDigest(engine, policy, notifier, clock)
        timers.schedule_digest(cron_trigger(policy.digest), daily.run)
        if missed_firing(policy.digest, clock.now()) is not None:
            timers.run_digest_now(daily.run)
    timers.start()
    _expose_gauges(StateGauges(engine, clock.now))
    TOKEN_TTL.set_function(lambda: -1 if (ttl := keeper.status().ttl) is None else ttl)
    readiness = Readiness()
    readiness.add("database", database_check(engine))
    readiness.add("vault", lambda: None if keeper.status().ready else keeper.status().summary())
    return Runtime(
        app=app,
        web_client=client,
        lifecycle=lifecycle,
        timers=timers,
        issuer=issuer,
        readiness=readiness,
        drain=drain,
        homes=homes,
    )
