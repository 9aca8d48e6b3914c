"""Every identifier Slack echoes back to us, in one place, so the manifest, the blocks and the
listeners cannot drift apart."""

import enum

COMMAND = "/debug-access"


class ActionId(enum.StrEnum):
    APPROVE = "approve_request"
    DENY = "deny_request"
    REVOKE = "revoke_grant"
    EXTEND = "extend_grant"
    REVIEW = "review_break_glass"
    OPEN_REQUEST_FORM = "open_request_form"
    OPEN_SSH_KEY_FORM = "open_ssh_key_form"
    ENROL_PASSKEY = "enrol_passkey"


class CallbackId(enum.StrEnum):
    REQUEST_MODAL = "request_access"
    EXTEND_MODAL = "extend_access"
    SSH_KEY_MODAL = "register_ssh_key"


class BlockId(enum.StrEnum):
    DECISION = "decision"
    GRANT_ACTIONS = "grant_actions"
    RESOURCE = "resource"
    DURATION = "duration"
    REASON = "reason"
    EXTEND_DURATION = "extend_duration"
    HOME_ACTIONS = "home_actions"
    PUBLIC_KEY = "public_key"
    SSH_KEY = "ssh_key"
    SSH_KEY_ACTIONS = "ssh_key_actions"
    PASSKEY_ACTIONS = "passkey_actions"


class InputId(enum.StrEnum):
    #: Also an action: choosing a resource redraws the form (an SSH key field, or none).
    RESOURCE = "resource_select"
    DURATION = "duration_input"
    REASON = "reason_input"
    EXTEND_DURATION = "extend_duration_input"
    PUBLIC_KEY = "public_key_input"
    SSH_KEY = "ssh_key_input"
