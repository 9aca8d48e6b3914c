"""In-process stand-ins for Slack, so tests can drive the real bot over real HTTP.

`SlackEmulator` plays the Slack Web API (what the bot calls); `SlackRequestSender` plays
Slack's request delivery (what calls the bot: signed slash commands, clicks, submissions).
"""

from tests.emulators.slack_api import Call, SlackEmulator
from tests.emulators.slack_client import SentRequest, SlackRequestSender

__all__ = ["Call", "SentRequest", "SlackEmulator", "SlackRequestSender"]
