"""On-call approver sources: who may approve a request right now.

A resource's ``approvers`` names Slack users and rotations. Each rotation is read through one
``OnCallSource`` (``base``): a schedule kept in the policy (``static``), a PagerDuty schedule or
escalation level (``pagerduty``), or the members of a Slack user group (``usergroup``).
``resolver`` turns the approver list into ordered tiers (primary, then escalations), falling
back to the next source when one is unreachable or has nobody on call.
"""
