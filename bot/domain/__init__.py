"""The pure core of debug-access: no Slack, no Vault, no database imports.

Every rule a security reviewer would ask about (what a duration means, what makes a request
valid, who may decide or revoke, which state may follow which) lives here, so a unit test
reaches it without starting anything.
"""
