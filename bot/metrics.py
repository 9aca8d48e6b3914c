"""Prometheus metrics: what an operator graphs and pages on, served on ``/metrics``.

Counters and histograms count what *this* replica did; scrape every replica and sum. The gauges
of state (active grants, pending requests, grants past their expiry) are read from the shared
database at scrape time (``bot.store.gauges``), so every replica reports the same, whole-system
value: take ``max`` across replicas, not ``sum``.

The one to page on is ``debug_access_grants_overdue``: grants whose expiry has passed and that
Vault has not confirmed revoked. Everything else in the bot fails closed; this is the number that
says access outlived its approval (``deploy/prometheus/alerts.yml``).

This module imports nothing of ours, so any layer may count (``pyproject.toml``'s import
contracts put it at the bottom). Names are the ones the alert rules use; renaming one is a
breaking change for whoever runs the bot.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Seconds buckets from a quick click to an hour-long wait for an approver.
_WAIT_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
#: Seconds buckets for issuing (Vault round trips and one Slack post; slower while retrying).
_ISSUE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "debug_access_requests",
    "Access requests by outcome: submitted, break_glass, granted (credentials delivered), "
    "denied, withdrawn, expired (nobody decided in time), failed.",
    ["outcome"],
)
APPROVAL_WAIT = Histogram(
    "debug_access_approval_wait_seconds",
    "From a request's submission to the decision that settled it (approved or denied).",
    buckets=_WAIT_BUCKETS,
)
ISSUE_LATENCY = Histogram(
    "debug_access_issue_seconds",
    "From the completing approval to the credentials delivered (Vault, then Slack).",
    buckets=_ISSUE_BUCKETS,
)
REVOCATIONS = Counter(
    "debug_access_revocations",
    "Revocations by result: ok (Vault confirmed the grant gone) or failed (retried later).",
    ["result"],
)
VAULT_ERRORS = Counter(
    "debug_access_vault_errors",
    "Vault calls that failed (refused, unreachable, timed out), by operation.",
    ["operation"],
)
SLACK_ERRORS = Counter(
    "debug_access_slack_errors",
    "Slack Web API calls that failed (an error answer or no answer), by method.",
    ["method"],
)
TOKEN_TTL = Gauge(
    "debug_access_vault_token_ttl_seconds",
    "Seconds left on the bot's own Vault token (-1: it never expires).",
)

#: Audit actions that settle or start a request, and the outcome each counts as.
OUTCOME_OF_ACTION = {
    "requested": "submitted",
    "break_glass": "break_glass",
    "delivered": "granted",
    "denied": "denied",
    "withdrawn": "withdrawn",
    "request_expired": "expired",
    "failed": "failed",
}
#: Audit actions that end a revocation, and its result.
REVOCATION_OF_ACTION = {"revoked": "ok", "expired": "ok", "revoke_failed": "failed"}


def count_committed(actions: list[str]) -> None:
    """Count the audit actions of a transaction that just committed (``bot.audit``)."""
    for action in actions:
        outcome = OUTCOME_OF_ACTION.get(action)
        if outcome is not None:
            REQUESTS.labels(outcome=outcome).inc()
        result = REVOCATION_OF_ACTION.get(action)
        if result is not None:
            REVOCATIONS.labels(result=result).inc()
