"""Every identifier Slack echoes back to us, in one place, so the manifest, the blocks and the
listeners cannot drift apart."""

import enum

COMMAND = "/debug-access"


class ActionId(enum.StrEnum):
    APPROVE = "approve_request"
    DENY = "deny_request"
    REVOKE = "revoke_grant"


class CallbackId(enum.StrEnum):
    REQUEST_MODAL = "request_access"


class BlockId(enum.StrEnum):
    DECISION = "decision"
    GRANT_ACTIONS = "grant_actions"
    RESOURCE = "resource"
    DURATION = "duration"
    REASON = "reason"


class InputId(enum.StrEnum):
    RESOURCE = "resource_select"
    DURATION = "duration_input"
    REASON = "reason_input"
