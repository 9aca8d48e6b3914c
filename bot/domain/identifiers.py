"""What Slack ids and policy names look like; one definition for the policy and the rotations."""

import re

SLACK_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,20}$")
SLACK_USERGROUP_ID = re.compile(r"^S[A-Z0-9]{2,20}$")
SLACK_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,20}$")
# Resource and rotation names: lowercase, digits, - and _, as they appear in commands.
POLICY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
