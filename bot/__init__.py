"""debug-access: temporary, approved, least-privilege production access from Slack.

The request lifecycle, top to bottom:

    slack/listeners/commands.py, views.py -> lifecycle/submit.py    (command / modal -> request)
    slack/listeners/actions.py            -> lifecycle/decide.py    (decision)
    lifecycle/issue.py, extend.py         -> issuer.py / vault/     (Vault issue, extend)
    scheduler.py -> lifecycle/due.py      -> lifecycle/revoke.py    (due in the database -> revoke)
    lifecycle/*                           -> audit.py               (hash-chained audit trail)
    scheduler.py (cron, from runtime.py)  -> digest.py              (daily digest)

The imports run one way, from the entry points (cli.py, dev.py, checks.py) through server.py,
runtime.py, slack/ and scheduler.py, the use cases (lifecycle/, digest.py) and policy.py down to
the edges' interfaces (ports.py, issuer.py, store/, oncall/) and the pure domain/; the contracts
under ``[tool.importlinter]`` in pyproject.toml keep it so.
"""

__version__ = "0.1.0"
