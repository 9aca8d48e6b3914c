"""The ``debug-access`` command: run the bot, prove its set-up, keep its records.

  serve          run the bot (Socket Mode when SLACK_APP_TOKEN is set, else HTTP)
  dev            run it against an embedded OpenBao dev server, SQLite and a demo policy
  check          prove the set-up works, changing nothing (policy, environment, database,
                 each grant's Vault engine, role and policies, Slack tokens and channels)
  vault-setup    write the grant policies and the token role to Vault (admin token)
  vault-policy   print the least-privilege Vault policy for the bot's own token
  audit verify   walk the audit trail's hash chain; audit export --since DAY: for a SIEM
  digest --now   post the daily digest for the last 24 hours
  db upgrade | db downgrade REV | db current   migrate the schema / show where it stands

When Slack is down (act as an admin: --as USER_ID or $DEBUG_ACCESS_ADMIN; audited via: cli):
  requests       pending requests and active grants (--all, --status S, --json)
  approve ID     approve a request: credentials still go only to the requester by Slack DM
  deny ID        deny a request
  revoke ID      end a grant now; Vault confirms
  lock USER WHY  the kill switch: revoke all USER's access, refuse anything new; unlock USER
  passkey-reset USER   remove USER's lost passkey; they register a new one from Slack
  (`debug-access approve --help` says exactly who may; Slack is told when it answers again)

Every command reads the environment and .env. Mistakes are reported in one line, exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from bot.cli_admin import add_commands, plain
from bot.config import DatabaseSettings
from bot.configuration import load_configuration
from bot.domain.errors import UserError
from bot.errors import ConfigProblem
from bot.logs import configure_logging
from bot.policy import PolicyError, load_policy


def cmd_serve(_args: argparse.Namespace) -> int:
    from bot.server import run_bot

    settings, policy = load_configuration()
    run_bot(settings, policy)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from bot.dev import run_dev

    return run_dev(
        approvers=args.approver,
        approvals_channel=args.approvals_channel,
        audit_channel=args.audit_channel,
        vault_port=args.vault_port,
    )


def cmd_vault_setup(_args: argparse.Namespace) -> int:
    """Write the grant policies and the token role to Vault (needs a token allowed to)."""
    from bot.configuration import load_configuration
    from bot.runtime import build_issuer, vault_shapes

    settings, policy = load_configuration()
    report = build_issuer(settings).ensure_setup(vault_shapes(policy))
    for line in report.lines():
        print(line)  # noqa: T201
    return 0


def cmd_vault_policy(args: argparse.Namespace) -> int:
    """Print the least-privilege Vault policy for the bot's own token, for this policy file."""
    from bot.vault import bot_policy_hcl, lease_prefixes
    from bot.vault.checks import readable_paths
    from bot.vault.setup import ResourceGrantShape

    try:
        policy = load_policy(load_settings_for_policy())
    except PolicyError as exc:
        raise ConfigProblem(f"The policy file is invalid:\n{exc}") from None
    prefixes = lease_prefixes([res.grant for res in policy.resources.values()])
    shapes = [
        ResourceGrantShape(name=name, grant=res.grant) for name, res in policy.resources.items()
    ]
    hcl = bot_policy_hcl(
        lease_prefixes=prefixes, take_back=args.take_back, readable=readable_paths(shapes)
    )
    print(hcl, end="")  # noqa: T201
    return 0


def load_settings_for_policy() -> Path:
    """The policy path alone (from the environment or ``.env``, like every command): printing
    a Vault policy needs no Slack or Vault secrets."""
    from dotenv import dotenv_values

    from_file = dotenv_values(".env").get("DEBUG_ACCESS_POLICY") if Path(".env").exists() else None
    return Path(os.environ.get("DEBUG_ACCESS_POLICY") or from_file or "policy.yml")


def _parse_day(text: str) -> datetime:
    from bot.audit_export import parse_day

    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _missing_sqlite_file() -> Path | None:
    """The configured SQLite file, if it is not there (None for any other database)."""
    url = DatabaseSettings().database_url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url.removeprefix("sqlite:///"))
        return None if path.exists() else path
    return None


def _existing_database() -> Engine:
    """The configured database, for commands that only read it: a SQLite file that is not
    there is an error, never created empty (and then reported as "intact: 0 events")."""
    from bot.store.db import make_engine

    missing = _missing_sqlite_file()
    if missing is not None:
        raise ConfigProblem(f"no database at {missing} (DATABASE_URL): check the path")
    return make_engine(DatabaseSettings().database_url)


def _database_at_head() -> Engine:
    """The configured database, refusing unless its schema is this release's."""
    from bot.store import schema

    engine = _existing_database()
    schema.require_head(engine)
    return engine


def cmd_db_upgrade(_args: argparse.Namespace) -> int:
    """Bring the schema to this release's head (under a lock; replicas may be running)."""
    from bot.store import schema
    from bot.store.db import make_engine

    configure_logging("INFO")
    revision = schema.upgrade(make_engine(DatabaseSettings().database_url))
    print(f"database schema at {revision} (head)")  # noqa: T201
    return 0


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    """Take the schema back to an earlier revision, to run an older release again."""
    from bot.store import schema
    from bot.store.db import make_engine

    configure_logging("INFO")
    revision = schema.downgrade(make_engine(DatabaseSettings().database_url), args.revision)
    print(f"database schema at {revision}")  # noqa: T201
    return 0


def cmd_db_current(_args: argparse.Namespace) -> int:
    """Print the database's revision and this release's head; exit 1 when they differ."""
    from bot.store import schema

    missing = _missing_sqlite_file()
    at = None if missing is not None else schema.current(_existing_database())
    wanted = schema.head()
    print(f"database: {at or 'none (not migrated yet)'}\nthis release: {wanted}")  # noqa: T201
    return 0 if at == wanted else 1


def cmd_audit_verify(_args: argparse.Namespace) -> int:
    """Walk the hash chain; name the first broken row."""
    from sqlmodel import Session

    from bot.audit import verify_chain
    from bot.audit_export import verify_report_text

    with Session(_database_at_head()) as session:
        report = verify_chain(session)
    print(verify_report_text(report))  # noqa: T201
    return 0 if report.ok else 1


def cmd_audit_export(args: argparse.Namespace) -> int:
    """Write audit events for a SIEM, as JSON lines or CSV."""
    from sqlmodel import Session

    from bot.audit_export import export_events, query_events

    with Session(_database_at_head()) as session:
        events = query_events(session, args.since, args.until)
        if args.output == "-":
            count = export_events(events, args.format, sys.stdout)
        else:
            with Path(args.output).open("w", encoding="utf-8", newline="") as out:
                count = export_events(events, args.format, out)
    print(f"exported {count} events", file=sys.stderr)  # noqa: T201
    return 0


def cmd_digest(_args: argparse.Namespace) -> int:
    """Post the digest for the last 24 hours now."""
    from bot.digest import DailyDigest
    from bot.ports import SystemClock
    from bot.slack.app import build_web_client
    from bot.slack.notifier import SlackNotifier

    settings, policy = load_configuration()
    configure_logging(settings.log_level, settings.log_format)
    engine = _database_at_head()
    if not policy.channels.audit:
        raise ConfigProblem("the policy names no audit channel (channels.audit): no digest to post")
    notifier = SlackNotifier(build_web_client(settings), policy)
    posted = DailyDigest(engine, policy, notifier, SystemClock()).run(now=True)
    return 0 if posted else 1


def cmd_check(_args: argparse.Namespace) -> int:
    from bot.checks import run_checks

    return run_checks()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="debug-access",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run the bot").set_defaults(func=cmd_serve)
    dev = sub.add_parser("dev", help="run with an embedded OpenBao dev server and SQLite")
    dev.add_argument(
        "--approver",
        action="append",
        default=[],
        metavar="USER_ID",
        help="Slack user id allowed to approve the demo resource (repeatable; "
        "default: $DEBUG_ACCESS_DEV_APPROVERS)",
    )
    dev.add_argument("--approvals-channel", metavar="CHANNEL_ID", default=None)
    dev.add_argument("--audit-channel", metavar="CHANNEL_ID", default=None)
    dev.add_argument(
        "--vault-port",
        type=int,
        default=8200,
        help="where the embedded OpenBao listens (loopback); if the port is taken, a free one is "
        "used and the banner says which",
    )
    dev.set_defaults(func=cmd_dev)
    sub.add_parser(
        "check",
        help="prove the set-up works, changing nothing: configuration, database, Vault (each "
        "grant's engine, role and policies), Slack tokens and channels",
    ).set_defaults(func=cmd_check)
    sub.add_parser(
        "vault-setup",
        help="write the grant policies and the token role to Vault (an admin token's job)",
    ).set_defaults(func=cmd_vault_setup)
    vault_policy = sub.add_parser(
        "vault-policy", help="print the least-privilege Vault policy for the bot"
    )
    vault_policy.add_argument(
        "--take-back",
        action="store_true",
        help="add sudo on the role's create path and token revoke/lookup, so a token creation "
        "whose answer was lost is revoked and confirmed gone (see the README)",
    )
    vault_policy.set_defaults(func=cmd_vault_policy)
    audit = sub.add_parser("audit", help="verify or export the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    audit_sub.add_parser(
        "verify", help="check the hash chain; name the first broken row"
    ).set_defaults(func=cmd_audit_verify)
    export = audit_sub.add_parser("export", help="write events for a SIEM")
    export.add_argument(
        "--since", type=_parse_day, required=True, help="a date (midnight UTC) or an ISO time"
    )
    export.add_argument("--until", type=_parse_day, default=None)
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--output", default="-", help="a file (default: standard output)")
    export.set_defaults(func=cmd_audit_export)
    db = sub.add_parser("db", help="the database schema (Alembic migrations)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser(
        "upgrade",
        help="migrate to this release's schema (safe while replicas "
        "run: one migrates, the others wait)",
    ).set_defaults(func=cmd_db_upgrade)
    down = db_sub.add_parser(
        "downgrade",
        help="take the schema back to REVISION to run an older release "
        "(drops what later revisions added: back up first)",
    )
    down.add_argument("revision", help="e.g. 0001 (see `db current`)")
    down.set_defaults(func=cmd_db_downgrade)
    db_sub.add_parser(
        "current", help="show the database's revision and this release's"
    ).set_defaults(func=cmd_db_current)
    digest = sub.add_parser("digest", help="post the daily digest")
    digest.add_argument(
        "--now",
        action="store_true",
        required=True,
        help="post the digest for the 24 hours up to now",
    )
    digest.set_defaults(func=cmd_digest)
    add_commands(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("debug-access")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def _one_line(exc: BaseException) -> str | None:
    """What an operator mistake or an unreachable dependency means, in one line (None: a bug,
    which keeps its traceback)."""
    from slack_sdk.errors import SlackApiError
    from sqlalchemy.exc import OperationalError

    from bot.store.db import StoreUnavailable

    if isinstance(exc, StoreUnavailable | OperationalError):
        where = DatabaseSettings().database_url.rsplit("@", 1)[-1]
        return f"cannot reach the database at {where} (DATABASE_URL): {exc}"
    if isinstance(exc, SlackApiError):
        code = exc.response.get("error")
        hint = " (check SLACK_BOT_TOKEN)" if code in {"invalid_auth", "not_authed"} else ""
        return f"Slack refused the bot's token: {code}{hint}"
    if isinstance(exc, OSError) and "slack" in str(exc).lower():
        return f"cannot reach Slack (SLACK_API_URL): {exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigProblem as exc:
        print(f"debug-access: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except UserError as exc:  # an admin command refused: nothing changed
        print(f"debug-access: refused: {plain(str(exc))}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`audit export | head`): nothing more to say to anyone.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        message = _one_line(exc)
        if message is None:
            raise
        print(f"debug-access: {message}", file=sys.stderr)  # noqa: T201
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
