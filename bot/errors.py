"""Errors that stop the process with a message for the operator (not for Slack users)."""


class ConfigProblem(Exception):
    """Configuration that stops the bot, explained in plain words."""
