"""Reading the configuration a command runs with: the environment, then the policy file.

Both are checked before anything starts, and every problem becomes a ``ConfigProblem`` that
names what to fix, so ``serve``, ``dev`` and ``check`` all explain it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bot.config import Settings, VaultLoginSettings
from bot.errors import ConfigProblem
from bot.policy import Policy, PolicyError, load_policy


def load_settings(**overrides: Any) -> Settings:
    """The environment's settings (``overrides`` win), or one ConfigProblem naming every gap."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        errors = list(exc.errors())
        if not any(e["loc"] == () for e in errors):
            # Pydantic skips the log-in check when a field failed: run it alone, so one reading
            # of the message names everything that is missing.
            try:
                VaultLoginSettings(**{k: v for k, v in overrides.items() if k.startswith("vault")})
            except ValidationError as vault_exc:
                errors += [e for e in vault_exc.errors() if e["loc"] == ()]
        lines = [
            f"  {'.'.join(str(p) for p in e['loc']).upper() or 'VAULT LOG-IN'}: {e['msg']}"
            for e in errors
        ]
        hint = (
            "see .env.example"
            if Path(".env").exists()
            else "there is no .env here: cp .env.example .env, then fill it in"
        )
        raise ConfigProblem(
            f"The environment is incomplete ({hint}):\n" + "\n".join(lines)
        ) from None


def load_configuration(**overrides: Any) -> tuple[Settings, Policy]:
    """The settings and the policy file they point to, both checked."""
    settings = load_settings(**overrides)
    try:
        policy = load_policy(settings.debug_access_policy)
    except PolicyError as exc:
        raise ConfigProblem(f"The policy file is invalid:\n{exc}") from None
    if policy.uses_step_up() and settings.public_url is None:
        raise ConfigProblem(
            "The policy asks for passkey step-up (step_up: passkey) but PUBLIC_URL is not set: "
            "set it to the https:// address where approvers' browsers reach the bot "
            "(see README, Passkey step-up)."
        )
    return settings, policy
