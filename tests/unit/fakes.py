"""Small in-memory doubles for the lifecycle's edges (Vault, Slack, the clock), and a harness
that runs the real timer tick over them.

Each fake implements the real Protocol, records what it was asked, and answers truthfully:
``FakeIssuer`` tracks which tokens and leases are live, so ``confirm_revoked`` only says yes
when ``revoke`` really removed them. No network, no threads of its own.
"""

from __future__ import annotations

import inspect
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, create_engine, select

from bot.domain.grant_kinds import DynamicSecretGrant, SshCertificateGrant, VaultTokenGrant
from bot.domain.permissions import eligible_approvers
from bot.issuer import GrantSpec, GrantToken, IssuerError, Obtained, SecretValue, WrappedSecret
from bot.lifecycle import AccessLifecycle
from bot.policy import Policy, parse_policy
from bot.ports import ApproverTier, CredentialDelivery, DeliveryError, MessageRef, RequestView
from bot.scheduler import DueWorkRunner
from bot.store.db import create_schema

START = datetime(2025, 3, 4, 9, 0, tzinfo=UTC)

EXAMPLE_POLICY = """\
channels:
  approvals: C0APPROVALS
  audit: C0AUDIT
delivery: wrapped
resources:
  payments-db:
    description: Read-only SQL on the payments replica
    grant: {type: dynamic_secret, path: database/creds/payments-readonly}
    default_duration: 1h
    max_duration: 4h
    approvers: [U0ALICE, U0BOB]
  orders-logs:
    description: Read the orders service's log-shipping secrets
    grant: {type: vault_token, policies: [orders-logs-read]}
    max_duration: 2h
    approvers: [U0ALICE]
"""

REQUESTER = "U0CAROL"
APPROVER = "U0ALICE"
OTHER_APPROVER = "U0BOB"
BYSTANDER = "U0MALLORY"


class SimulatedCrash(BaseException):
    """Stands for the process dying mid-step. A BaseException, like SystemExit: a process that
    dies is not an error the code can handle, so no ``except Exception`` catches it."""


class FakeClock:
    """A settable, timezone-aware UTC clock."""

    def __init__(self, now: datetime = START) -> None:
        assert now.tzinfo is not None
        self._now = now

    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        assert now.tzinfo is not None
        self._now = now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def sleep(self, seconds: float) -> None:
        """What ``time.sleep`` becomes under this clock: time passes, at once."""
        self.advance(timedelta(seconds=seconds))


OPERATIONS = ("create", "read", "sign", "wrap", "revoke", "confirm", "renew")


class FakeIssuer:
    """``bot.issuer.Issuer`` in memory.

    * ``fail(op, times)`` makes the next ``times`` calls of ``op`` raise IssuerError
      (``op`` in OPERATIONS); ``crash(op)`` makes the next call raise SimulatedCrash instead.
      ``how``: ``"refused"`` (Vault answered with an error), ``"unreachable"`` (no connection:
      nothing reached Vault) or ``"lost"`` (Vault did it, its answer was lost: only for
      ``create``, whose token then stays live unknown to the caller).
    * ``revoke_is_noop``: revoke "succeeds" but leaves everything live (a lying backend), so
      only ``confirm_revoked`` can tell.
    * ``token_ttl_cap`` / ``lease_ttl``: Vault capping the grant below what was approved.
    """

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, Any]] = []
        self.live_tokens: set[str] = set()
        self.live_leases: set[str] = set()
        self.secrets: list[str] = []  # every secret value ever minted, revealed
        self.lease_owner: dict[str, str] = {}
        self.wrapped: dict[str, dict[str, str]] = {}
        self.revoke_is_noop = False
        self.token_ttl_cap: timedelta | None = None
        self.lease_ttl: timedelta | None = None
        self.renew_cap: timedelta | None = None
        self.live_wraps: set[str] = set()  # accessors of wrapping tokens not yet unwrapped
        self.requester_unwraps = True  # False: wrapped credentials are never collected
        self._failures = dict.fromkeys(OPERATIONS, 0)
        self._failure_how = dict.fromkeys(OPERATIONS, "refused")
        self._crash: set[str] = set()
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    # -- test controls ------------------------------------------------------------------------

    def fail(self, op: str, times: int = 1, how: str = "refused") -> None:
        assert op in OPERATIONS, op
        assert how in {"refused", "unreachable"} or (how == "lost" and op == "create"), how
        self._failures[op] = times
        self._failure_how[op] = how

    def crash(self, op: str) -> None:
        assert op in OPERATIONS, op
        self._crash.add(op)

    def count(self, op: str) -> int:
        return sum(1 for name, _ in self.calls if name == op)

    @property
    def live(self) -> bool:
        return bool(self.live_tokens or self.live_leases)

    def _enter(self, op: str, args: Any) -> int:
        self.calls.append((op, args))
        if op in self._crash:
            self._crash.discard(op)
            raise SimulatedCrash(f"process died during {op}")
        if self._failures[op] > 0 and self._failure_how[op] != "lost":
            self._failures[op] -= 1
            if self._failure_how[op] == "unreachable":
                raise IssuerError(f"could not reach fake Vault for {op}", unreachable=True)
            raise IssuerError(f"fake Vault refused {op}")
        return next(self._counter)

    def _secret(self, text: str) -> SecretValue:
        self.secrets.append(text)
        return SecretValue(text)

    # -- the Issuer protocol -------------------------------------------------------------------

    def create_grant_token(self, spec: GrantSpec) -> GrantToken:
        with self._lock:
            n = self._enter("create", spec)
            ttl = min(spec.ttl, spec.max_ttl)
            if self.token_ttl_cap is not None:
                ttl = min(ttl, self.token_ttl_cap)
            accessor = f"accessor-{n:04d}"
            self.live_tokens.add(accessor)
            if self._failures["create"] > 0:  # "lost": made, but the answer never came
                self._failures["create"] -= 1
                raise IssuerError("fake Vault did not answer within 5s", maybe_done=True)
            return GrantToken(
                accessor=accessor,
                token=self._secret(f"hvs.SECRET-token-{n:04d}"),
                expires_at=self.clock.now() + ttl,
                policies=(
                    spec.grant.policies
                    if isinstance(spec.grant, VaultTokenGrant)
                    else ("debug-access-grant",)
                ),
            )

    def obtain(self, token: GrantToken, spec: GrantSpec) -> Obtained:
        """Like Vault: a vault_token grant hands over the token itself (no call, no lease); a
        dynamic_secret grant reads its path (the "read" operation) and gets a lease; an
        ssh_certificate grant has the request's public key signed ("sign"), with no lease."""
        if isinstance(spec.grant, SshCertificateGrant):
            with self._lock:
                n = self._enter("sign", (token.accessor, spec.public_key))
                if spec.public_key is None:
                    raise IssuerError("the request carries no SSH public key to sign")
                return Obtained(
                    values={
                        "certificate": SecretValue(f"ssh-ed25519-cert-v01@openssh.com C{n:04d}")
                    },
                    audit={"serial": f"{n:04x}", "principals": list(spec.grant.principals)},
                    instructions=("Save it as `~/.ssh/id_ed25519-cert.pub`.",),
                    verbatim=True,
                )
        if not isinstance(spec.grant, DynamicSecretGrant):
            return Obtained(values={"token": token.token})
        path = spec.grant.path
        with self._lock:
            n = self._enter("read", (token.accessor, path))
            if token.accessor not in self.live_tokens:
                raise IssuerError("permission denied: the grant token is gone")
            lease_id = f"{path}/lease-{n:04d}"
            self.live_leases.add(lease_id)
            self.lease_owner[lease_id] = token.accessor
            expires = token.expires_at
            if self.lease_ttl is not None:
                expires = min(expires, self.clock.now() + self.lease_ttl)
            return Obtained(
                lease_id=lease_id,
                lease_expires_at=expires,
                values={
                    "username": self._secret(f"v-token-SECRET-user-{n:04d}"),
                    "password": self._secret(f"SECRET-password-{n:04d}"),
                },
            )

    def wrap(self, values: Mapping[str, str], ttl: timedelta) -> WrappedSecret:
        with self._lock:
            n = self._enter("wrap", (dict(values), ttl))
            text = f"hvs.SECRET-wrapping-{n:04d}"
            self.secrets.append(text)
            token = WrappedSecret(text, f"wrap-accessor-{n:04d}")
            self.wrapped[text] = dict(values)
            if not self.requester_unwraps:
                self.live_wraps.add(token.accessor)
            return token

    def unwrap(self, accessor: str) -> None:
        """The requester unwraps: the wrapping token is gone (test control)."""
        self.live_wraps.discard(accessor)

    def revoke(self, token_accessor: str | None, lease_id: str | None) -> None:
        with self._lock:
            self._enter("revoke", (token_accessor, lease_id))
            if self.revoke_is_noop:
                return
            self.live_leases.discard(lease_id or "")
            if token_accessor is not None:
                self.live_tokens.discard(token_accessor)
                self.live_wraps.discard(token_accessor)
                # A lease read with the grant token dies with the token, as in Vault.
                self.live_leases -= {
                    lease for lease, owner in self.lease_owner.items() if owner == token_accessor
                }

    def confirm_revoked(self, token_accessor: str | None, lease_id: str | None) -> bool:
        with self._lock:
            self._enter("confirm", (token_accessor, lease_id))
            return (
                token_accessor not in self.live_tokens
                and token_accessor not in self.live_wraps
                and lease_id not in self.live_leases
            )

    def renew(self, token_accessor: str, lease_id: str | None, until: datetime) -> datetime:
        """Renew to ``until``, capped at now + ``renew_cap`` when set (a role's max TTL)."""
        with self._lock:
            self._enter("renew", (token_accessor, lease_id, until))
            if self.renew_cap is not None:
                return min(until, self.clock.now() + self.renew_cap)
            return until


@dataclass
class FakeNotifier:
    """``bot.ports.Notifier`` that records every call.

    ``fail_delivery`` makes ``deliver_credentials`` raise DeliveryError (``delivery_failures``:
    only the next so many); ``slack_down`` makes every call that must get through
    (``deliver_credentials``, ``send``, ``post_audit``, ``update_request``) raise, asking to
    retry after ``retry_after`` seconds. ``refusals`` (user → Slack's error code) makes ``send``
    to those users alone raise with that code; ``audit_refusal`` does the same for ``post_audit``
    (a deactivated user, an archived audit channel).
    ``observer`` (if set) is called with the method name before each call is recorded, so a test
    can look at the database at the moment Slack would have been told.
    """

    approvals_channel: str | None = "C0APPROVALS"
    fail_delivery: bool = False
    delivery_failures: int = 0
    slack_down: bool = False
    retry_after: float | None = None
    refusals: dict[str, str] = field(default_factory=dict)
    audit_refusal: str | None = None
    observer: Callable[[str, tuple[Any, ...]], None] | None = None
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    threads: list[MessageRef | None] = field(default_factory=list)
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _record(self, name: str, *args: Any) -> None:
        if self.observer is not None:
            self.observer(name, args)
        with self._lock:
            self.calls.append((name, args))

    def _ref(self, channel: str) -> MessageRef:
        with self._lock:
            return MessageRef(channel, f"1700000000.{next(self._ts):06d}")

    def of(self, name: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return [args for call, args in self.calls if call == name]

    @property
    def tells(self) -> list[tuple[str, str]]:
        """Every plain DM that reached someone: best-effort ones and notices Slack took."""
        with self._lock:
            return [
                (args[0], args[1])
                for call, args in self.calls
                if call == "tell" or (call == "send" and args[2])
            ]

    @property
    def audits(self) -> list[tuple[RequestView | None, str, str, bool]]:
        return [(view, action, text, alert) for view, action, text, alert in self.of("audit")]

    @property
    def deliveries(self) -> list[tuple[RequestView, CredentialDelivery]]:
        return [(view, delivery) for view, delivery in self.of("deliver_credentials")]

    # -- the Notifier protocol ----------------------------------------------------------------

    def announce_request(
        self, view: RequestView, users: Sequence[str], in_channel: bool = True
    ) -> list[MessageRef]:
        self._record("announce_request", view, tuple(users), in_channel)
        refs = [self._ref(self.approvals_channel)] if self.approvals_channel and in_channel else []
        refs += [self._ref(f"D-{user}") for user in users]
        return refs

    def refresh_request(self, view: RequestView, refs: Sequence[MessageRef]) -> None:
        self._record("refresh_request", view, tuple(refs))

    def deliver_credentials(self, view: RequestView, delivery: CredentialDelivery) -> MessageRef:
        self._record("deliver_credentials", view, delivery)
        if self.slack_down:
            raise DeliveryError("fake Slack: ratelimited", retry_after=self.retry_after)
        if self.delivery_failures > 0:
            self.delivery_failures -= 1
            raise DeliveryError("fake Slack: internal_error", retry_after=self.retry_after)
        if self.fail_delivery:
            raise DeliveryError("fake Slack: cannot open a DM with the requester")
        return self._ref(f"D-{view.requester}")

    def close_credentials(self, view: RequestView, ref: MessageRef) -> None:
        self._record("close_credentials", view, ref)

    def tell(self, user: str, text: str) -> None:
        self._record("tell", user, text)

    def send(self, user: str, text: str) -> None:
        refused = self.refusals.get(user)
        self._record("send", user, text, not self.slack_down and refused is None)
        if self.slack_down:
            raise DeliveryError("fake Slack: ratelimited", retry_after=self.retry_after)
        if refused is not None:
            raise DeliveryError(f"fake Slack: {refused}", code=refused)

    def audit(
        self,
        view: RequestView | None,
        action: str,
        text: str,
        alert: bool = False,
        thread: MessageRef | None = None,
    ) -> MessageRef | None:
        self._record("audit", view, action, text, alert)
        with self._lock:
            self.threads.append(thread)
        return None if thread is not None else self._ref("C0AUDIT")

    def post_audit(
        self,
        view: RequestView | None,
        action: str,
        text: str,
        alert: bool = False,
        thread: MessageRef | None = None,
    ) -> MessageRef | None:
        taken = not self.slack_down and self.audit_refusal is None
        self._record("post_audit", view, action, text, alert, taken)
        if self.slack_down:
            raise DeliveryError("fake Slack: ratelimited", retry_after=self.retry_after)
        if self.audit_refusal is not None:
            raise DeliveryError(f"fake Slack: {self.audit_refusal}", code=self.audit_refusal)
        with self._lock:
            self.threads.append(thread)
        return None if thread is not None else self._ref("C0AUDIT")

    def update_request(
        self,
        view: RequestView,
        approvals: Sequence[MessageRef],
        credentials: Sequence[MessageRef] = (),
    ) -> None:
        taken = not self.slack_down
        self._record("update_request", view, tuple(approvals), tuple(credentials), taken)
        if self.slack_down:
            raise DeliveryError("fake Slack: ratelimited", retry_after=self.retry_after)

    def home_changed(self, users: Sequence[str]) -> None:
        self._record("home_changed", tuple(users))


def memory_engine() -> Engine:
    """One in-memory SQLite database shared by every session (StaticPool), schema created."""
    engine = create_engine(
        "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
    )
    create_schema(engine)
    return engine


@dataclass
class Harness:
    lifecycle: AccessLifecycle
    engine: Engine
    policy: Policy
    issuer: FakeIssuer
    notifier: FakeNotifier
    clock: FakeClock

    def tick(self) -> Counter[str]:
        """One timer tick at the fake clock's time: the real runner, claims and all, over this
        database (what a replica's APScheduler runs every second or two)."""
        return DueWorkRunner(
            self.engine, self.lifecycle.due_work(), self.clock, also=self.lifecycle.periodic_work()
        ).tick()

    def due(self, kind: str, at: datetime | None = None) -> list[int]:
        """The ids of the rows of ``kind`` (a ``DueWork`` name) due at ``at`` (default now),
        whether a tick holds them or not."""
        (work,) = [w for w in self.lifecycle.due_work() if w.name == kind]
        with Session(self.engine) as session:
            query = select(work.table.id).where(work.due(at or self.clock.now()))
            return sorted(key for key in session.exec(query) if key is not None)

    def becomes_due(self, kind: str, key: int, at: datetime) -> bool:
        """Whether row ``key`` is due for ``kind`` from ``at`` on, and not a second before."""
        return key not in self.due(kind, at - timedelta(seconds=1)) and key in self.due(kind, at)


class StaticApprovers:
    """``ApproverDirectory`` for policies that list Slack user ids only (one tier each)."""

    def tiers(self, entries: Sequence[str], requester: str, now: datetime) -> list[ApproverTier]:
        return [ApproverTier(source="policy", users=tuple(eligible_approvers(requester, entries)))]

    def may_approve(self, user: str, entries: Sequence[str], requester: str, now: datetime) -> bool:
        return user != requester and user in entries

    def in_any_group(self, user: str, groups: Sequence[str]) -> bool:
        return False


def make_lifecycle(
    policy: str | Policy = EXAMPLE_POLICY,
    *,
    engine: Engine | None = None,
    clock: FakeClock | None = None,
    issuer: FakeIssuer | None = None,
    notifier: FakeNotifier | None = None,
) -> Harness:
    """An AccessLifecycle wired to fakes (and an in-memory database unless one is given)."""
    parsed = parse_policy(policy, "test-policy.yml") if isinstance(policy, str) else policy
    clock = clock or FakeClock()
    engine = engine or memory_engine()
    issuer = issuer or FakeIssuer(clock)
    notifier = notifier or FakeNotifier()
    lifecycle = AccessLifecycle(
        engine=engine,
        policy=parsed,
        issuer=issuer,
        notifier=notifier,
        clock=clock,
        approvers=StaticApprovers(),
    )
    # Waiting between delivery attempts moves the fake clock instead of sleeping.
    lifecycle.issuing.sleep = clock.sleep
    return Harness(lifecycle, engine, parsed, issuer, notifier, clock)


def race(count: int, step: Callable[[int], Any], timeout: float = 60.0) -> list[Any]:
    """Run ``step(i)`` in ``count`` threads released at the same moment; return each result or
    the exception it raised, in thread order (so an unexpected error shows in the assert)."""
    barrier = threading.Barrier(count)
    outcomes: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = step(index)
        except Exception as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a racing thread hung"
    return outcomes


# -- Slack listener doubles ----------------------------------------------------------------------


class FakeBoltApp:
    """Just the decorators the listener modules use, capturing each handler by its id.

    A handler that names ``later`` (work after its ack) gets ``self.later``: by default the step
    runs at once, after being recorded in ``deferred``; with ``hold_back`` set it is only
    recorded, to show what a handler did before handing on."""

    def __init__(self) -> None:
        self.commands: dict[str, Callable[..., None]] = {}
        self.actions: dict[str, Callable[..., None]] = {}
        self.views: dict[str, Callable[..., None]] = {}
        self.events: dict[str, Callable[..., None]] = {}
        self.deferred: list[Callable[[], None]] = []
        self.hold_back = False

    def later(self, step: Callable[[], None]) -> None:
        self.deferred.append(step)
        if not self.hold_back:
            step()

    def _capture(self, registry: dict[str, Callable[..., None]], key: str) -> Callable[..., Any]:
        def decorator(fn: Callable[..., None]) -> Callable[..., None]:
            assert key not in registry, f"{key} registered twice"
            wants_later = "later" in inspect.signature(fn).parameters

            def handler(**kwargs: Any) -> None:
                if wants_later:
                    kwargs.setdefault("later", self.later)
                fn(**kwargs)

            registry[key] = handler
            return fn

        return decorator

    def command(self, name: str) -> Callable[..., Any]:
        return self._capture(self.commands, name)

    def action(self, action_id: str) -> Callable[..., Any]:
        return self._capture(self.actions, action_id)

    def view(self, callback_id: str) -> Callable[..., Any]:
        return self._capture(self.views, callback_id)

    def event(self, name: str) -> Callable[..., Any]:
        return self._capture(self.events, name)


class Recorder:
    """Stands in for Bolt's ``ack`` and ``respond``: records the keyword arguments of each call."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, text: str | None = None, **kwargs: Any) -> None:
        if text is not None:
            kwargs["text"] = text
        self.calls.append(kwargs)


class FakeWebClient:
    """The few Web API methods the listeners call; ``fail_with`` makes every call raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_with: Exception | None = None

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((method, kwargs))
        if self.fail_with is not None:
            raise self.fail_with
        return {"ok": True}

    def views_open(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("views.open", **kwargs)

    def views_update(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("views.update", **kwargs)

    def chat_postEphemeral(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("chat.postEphemeral", **kwargs)

    def chat_postMessage(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("chat.postMessage", **kwargs)

    def conversations_open(self, **kwargs: Any) -> dict[str, Any]:
        self._call("conversations.open", **kwargs)
        return {"ok": True, "channel": {"id": f"D-{kwargs['users']}"}}
