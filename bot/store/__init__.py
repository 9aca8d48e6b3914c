"""Persistence: the database is the truth; Slack messages and timers are rebuilt from it."""
