"""Persistence: the database is the truth; Slack messages are rebuilt from it, and timers read
their due times from it."""
