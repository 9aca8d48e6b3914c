"""Outbound Slack: everything the lifecycle tells people, through the Web API.

By the time any method here runs, the state it reports is committed, so a Slack outage must not
undo it: failures are logged and swallowed, except for credential delivery, which the lifecycle
must know about (it revokes a grant that could not be delivered).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.domain.digest import Digest
from bot.domain.digest_chart import CHART_DAYS, ResourceUse
from bot.policy import Policy
from bot.ports import CredentialDelivery, DeliveryError, MessageRef, RequestView
from bot.slack import blocks
from bot.slack.digest_blocks import render_digest
from bot.slack.digest_chart import render_usage_chart

log = logging.getLogger(__name__)

# Slack answered with an error, or could not be reached at all (URLError is an OSError).
SLACK_FAILURES = (SlackApiError, OSError)


def error_code(exc: Exception) -> str:
    """The short reason for a failed call, never the request body (it may hold credentials)."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error"))
    return type(exc).__name__


def retry_after(exc: Exception) -> float | None:
    """Slack's ``Retry-After`` (seconds) on a rate-limited answer, if it sent one."""
    if not isinstance(exc, SlackApiError):
        return None
    headers = exc.response.headers or {}
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def delivery_error(what: str, exc: Exception) -> DeliveryError:
    # Only the error code: the request body may have held the credentials.
    code = error_code(exc) if isinstance(exc, SlackApiError) else None
    return DeliveryError(f"{what}: {error_code(exc)}", retry_after=retry_after(exc), code=code)


#: How many users' DM channels are remembered (then forgotten all at once, and reopened).
DM_CHANNELS_REMEMBERED = 10_000


class SlackNotifier:
    """``bot.ports.Notifier`` on the Slack Web API."""

    def __init__(self, client: WebClient, policy: Policy) -> None:
        self.client = client
        self.policy = policy
        self._dm_channels: dict[str, str] = {}
        # Set once the App Home can be built: marks users whose Home changed.
        self.homes: Callable[[Sequence[str]], None] | None = None

    def _post(
        self,
        channel: str,
        text: str,
        message_blocks: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> MessageRef:
        response = self.client.chat_postMessage(
            channel=channel,
            text=text,
            blocks=message_blocks,
            unfurl_links=False,
            unfurl_media=False,
            **extra,
        )
        return MessageRef(channel=str(response["channel"]), ts=str(response["ts"]))

    def _post_dm(
        self, user: str, text: str, message_blocks: list[dict[str, Any]] | None = None
    ) -> MessageRef:
        """Post to ``user``'s DM channel; a remembered channel Slack refuses is forgotten, so
        the next attempt opens it again."""
        channel = self._dm_channel(user)
        try:
            return self._post(channel, text, message_blocks)
        except SlackApiError:
            self._dm_channels.pop(user, None)
            raise

    def _dm_channel(self, user: str) -> str:
        """The DM channel with ``user``: opened once, then remembered (a user's DM channel with
        the bot never changes), saving a round trip before every DM, credentials included."""
        channel = self._dm_channels.get(user)
        if channel is None:
            response = self.client.conversations_open(users=user)
            channel = str(response["channel"]["id"])
            if len(self._dm_channels) >= DM_CHANNELS_REMEMBERED:
                self._dm_channels.clear()
            self._dm_channels[user] = channel
        return channel

    def announce_request(
        self, view: RequestView, users: Sequence[str], in_channel: bool = True
    ) -> list[MessageRef]:
        text, message_blocks = blocks.approval_message(view)
        refs: list[MessageRef] = []
        targets: list[tuple[str, str]] = []
        if in_channel and self.policy.channels.approvals:
            targets.append(("channel", self.policy.channels.approvals))
        targets.extend(("user", user) for user in users)
        for kind, target in targets:
            try:
                if kind == "user":
                    refs.append(self._post_dm(target, text, message_blocks))
                else:
                    refs.append(self._post(target, text, message_blocks))
            except SLACK_FAILURES as exc:
                log.error(
                    "could not post request #%s to %s %s: %s",
                    view.id,
                    kind,
                    target,
                    error_code(exc),
                )
        return refs

    def refresh_request(self, view: RequestView, refs: Sequence[MessageRef]) -> None:
        text, message_blocks = blocks.approval_message(view)
        for ref in refs:
            self._update(ref, text, message_blocks)

    def update_request(
        self,
        view: RequestView,
        approvals: Sequence[MessageRef],
        credentials: Sequence[MessageRef] = (),
    ) -> None:
        updates = [(ref, blocks.approval_message(view)) for ref in approvals]
        if credentials:
            closed = blocks.credentials_closed_message(view)
            updates += [(ref, closed) for ref in credentials]
        for ref, (text, message_blocks) in updates:
            try:
                self.client.chat_update(
                    channel=ref.channel, ts=ref.ts, text=text, blocks=message_blocks
                )
            except SLACK_FAILURES as exc:
                what = f"Slack refused to update {ref.channel}/{ref.ts}"
                raise delivery_error(what, exc) from None

    def _update(self, ref: MessageRef, text: str, message_blocks: list[dict[str, Any]]) -> None:
        try:
            self.client.chat_update(
                channel=ref.channel, ts=ref.ts, text=text, blocks=message_blocks
            )
        except SLACK_FAILURES as exc:
            log.error("could not update message %s/%s: %s", ref.channel, ref.ts, error_code(exc))

    def deliver_credentials(self, view: RequestView, delivery: CredentialDelivery) -> MessageRef:
        text, message_blocks = blocks.credentials_message(view, delivery)
        try:
            return self._post_dm(view.requester, text, message_blocks)
        except SLACK_FAILURES as exc:
            raise delivery_error("Slack refused the DM", exc) from None

    def close_credentials(self, view: RequestView, ref: MessageRef) -> None:
        text, message_blocks = blocks.credentials_closed_message(view)
        self._update(ref, text, message_blocks)

    def tell(self, user: str, text: str) -> None:
        try:
            self._post_dm(user, text)
        except SLACK_FAILURES as exc:
            log.error("could not DM %s: %s", user, error_code(exc))

    def send(self, user: str, text: str) -> None:
        try:
            self._post_dm(user, text)
        except SLACK_FAILURES as exc:
            raise delivery_error("Slack refused the DM", exc) from None

    def audit(
        self,
        view: RequestView | None,
        action: str,
        text: str,
        alert: bool = False,
        thread: MessageRef | None = None,
    ) -> MessageRef | None:
        try:
            return self.post_audit(view, action, text, alert, thread)
        except DeliveryError as exc:
            log.error("could not post %s to the audit channel: %s", action, exc)
            return None

    def post_audit(
        self,
        view: RequestView | None,
        action: str,
        text: str,
        alert: bool = False,
        thread: MessageRef | None = None,
    ) -> MessageRef | None:
        channel = self.policy.channels.audit
        if not channel:
            return None
        try:
            if thread is not None:
                # Alerts (failed revocation, break-glass) are echoed to the channel itself.
                self._post(
                    channel,
                    blocks.audit_text(view, text, alert, threaded=True),
                    thread_ts=thread.ts,
                    reply_broadcast=alert,
                )
                return None
            return self._post(channel, blocks.audit_text(view, text, alert))
        except SLACK_FAILURES as exc:
            raise delivery_error("Slack refused the audit post", exc) from None

    def post_digest(
        self, digest: Digest, usage: Callable[[], Sequence[ResourceUse]] | None = None
    ) -> bool:
        channel = self.policy.channels.audit
        if not channel:
            log.warning("no audit channel in the policy: the digest is not posted")
            return False
        messages = render_digest(digest)
        try:
            root = self._post(channel, messages.main.text, messages.main.blocks)
            for reply in messages.thread:
                self._post(channel, reply.text, reply.blocks, thread_ts=root.ts)
            if messages.csv_attachment is not None:
                csv = messages.csv_attachment
                self.client.files_upload_v2(
                    channel=channel,
                    thread_ts=root.ts,
                    filename=csv.filename,
                    title=csv.title,
                    content=csv.content,
                )
        except SLACK_FAILURES as exc:
            log.error("could not post the digest: %s", error_code(exc))
            return False
        if usage is not None:
            self._post_chart(channel, root.ts, usage)
        return True

    def _post_chart(
        self, channel: str, thread_ts: str, usage: Callable[[], Sequence[ResourceUse]]
    ) -> None:
        """The picture, after the text: any failure (a query, the drawing, the upload) skips it
        with one line in the log, and the digest stands without it."""
        try:
            png = render_usage_chart(usage(), CHART_DAYS)
            self.client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                filename=f"debug-access-last-{CHART_DAYS}-days.png",
                title=f"Access held per resource, last {CHART_DAYS} days",
                content=png,
            )
        except Exception as exc:
            log.warning("digest chart skipped: %s: %s", type(exc).__name__, exc)

    def home_changed(self, users: Sequence[str]) -> None:
        """Mark these users' Homes for a refresh (``bot.slack.home.HomeRefresher``): never
        published on the caller's thread, so a use case never waits for it."""
        if self.homes is not None:
            self.homes(users)
