"""Optional password login: the user list, and password hashes that never store the password.

Login is off by default (one local user). Setting `AUTH_USERS_FILE` or `AUTH_USERS`
turns it on; each entry is `name:hash`, where the hash comes from

    .venv/bin/python -m web.accounts alice          # asks for the password twice
    echo "$PASSWORD" | .venv/bin/python -m web.accounts alice   # in a script

scrypt (from the standard library) makes each guess expensive, and the salt makes
two equal passwords hash differently.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import hmac
import secrets
import sys
from pathlib import Path

from models.settings import Settings

_N, _R, _P = 2**14, 8, 1
_SCHEME = "scrypt"


class UserListError(ValueError):
    """The configured user list cannot be used; the message says where and why."""


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return "$".join([_SCHEME, str(_N), str(_R), str(_P), _b64(salt), _b64(digest)])


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def load_users(settings: Settings) -> dict[str, str]:
    """User name -> password hash, from `AUTH_USERS_FILE` and `AUTH_USERS` (the variable wins on a clash)."""
    entries: list[tuple[str, str]] = []
    if settings.auth_users_file:
        path = Path(settings.auth_users_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise UserListError(f"AUTH_USERS_FILE {path} cannot be read: {error.strerror or error}.") from error
        entries += [
            (f"{path}:{number}", line.strip())
            for number, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    entries += [("AUTH_USERS", item.strip()) for item in settings.auth_users.split(",") if item.strip()]

    users: dict[str, str] = {}
    for where, entry in entries:
        name, _, stored = entry.partition(":")
        if not name.strip() or not stored.startswith(f"{_SCHEME}$"):
            raise UserListError(
                f"{where}: expected `name:scrypt$…` (make one with `python -m web.accounts NAME`); "
                "plain-text passwords are not accepted."
            )
        users[name.strip()] = stored.strip()
    if not users:
        raise UserListError("Login is on but the user list is empty: add `name:hash` lines to AUTH_USERS_FILE.")
    return users


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m web.accounts",
        description="Print a NAME:hash line for AUTH_USERS_FILE. The password is asked twice on a terminal, "
        'or read from the first line of standard input otherwise (echo "$PASSWORD" | python -m web.accounts NAME).',
    )
    parser.add_argument("name", help="the user name, without ':' or ','")
    args = parser.parse_args(argv)
    if ":" in args.name or "," in args.name or not args.name.strip():
        parser.error("a user name cannot be empty or contain ':' or ','")
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Again: "):
            print("The two passwords differ.", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        print("Use at least 8 characters.", file=sys.stderr)
        return 2
    print(f"{args.name}:{hash_password(password)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
