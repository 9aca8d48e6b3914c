"""Integration tests: real OpenBao, PostgreSQL and bot processes (see services.py)."""
