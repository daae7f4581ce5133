"""API keys for the OpenAI-compatible API (web/openai_api.py), one or more per user, stored hashed.

With login on, a client sends `Authorization: Bearer <key>`. Keys are made and revoked with

    .venv/bin/python -m web.api_keys new alice --label laptop   # prints the key, once
    .venv/bin/python -m web.api_keys list
    .venv/bin/python -m web.api_keys revoke ID

and kept in `API_KEYS_FILE` (`DATA_DIR/api-keys.json` by default) as their SHA-256: a key is
32 random bytes, so a fast hash is enough (unlike a password, it cannot be guessed from a
list), and checking one costs microseconds on the event loop. The app reads the file again
when it changes, so a revoked key stops working at once, without a restart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from models.settings import Settings
from web.accounts import UserListError, load_users

PREFIX = "ka"


@dataclass(frozen=True)
class ApiKey:
    id: str
    user: str
    sha256: str
    created: str
    label: str = ""


class ApiKeyFileError(ValueError):
    """The keys file cannot be read; the message says which file and why."""


def make_key(user: str, label: str = "") -> tuple[str, ApiKey]:
    """A new key for `user`: the key itself (shown once) and what is stored of it."""
    key_id, secret = secrets.token_hex(4), secrets.token_urlsafe(32)
    stored = ApiKey(key_id, user, _digest(secret), dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), label)
    return f"{PREFIX}-{key_id}-{secret}", stored


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiKeys:
    """The keys file, read again whenever it changes on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._by_id: dict[str, ApiKey] = {}

    def user_of(self, key: str) -> str | None:
        """The user a presented key belongs to, or None for a malformed, unknown or revoked key."""
        prefix, _, rest = key.strip().partition("-")
        key_id, _, secret = rest.partition("-")
        if prefix != PREFIX or not secret:
            return None
        stored = self.current().get(key_id)
        if stored is None or not hmac.compare_digest(stored.sha256, _digest(secret)):
            return None
        return stored.user

    def current(self) -> dict[str, ApiKey]:
        try:
            status = self.path.stat()
        except FileNotFoundError:
            self._seen, self._by_id = None, {}
            return self._by_id
        # The file is replaced, never edited in place (`write_keys`): a new inode even when a
        # revocation and a new key land within one tick of the clock and leave the size alike.
        stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
        if stamp != self._seen:
            self._by_id = {key.id: key for key in read_keys(self.path)}
            self._seen = stamp
        return self._by_id


def read_keys(path: Path) -> list[ApiKey]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as error:
        raise ApiKeyFileError(f"{path} cannot be read: {error.strerror or error}.") from error
    try:
        return [ApiKey(**entry) for entry in json.loads(text or "[]")]
    except (ValueError, TypeError) as error:
        raise ApiKeyFileError(f"{path} is not a list of keys written by `python -m web.api_keys`: {error}.") from error


def write_keys(path: Path, keys: list[ApiKey]) -> None:
    """Replace the file at once (never half-written), readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".api-keys-")
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump([asdict(key) for key in keys], file, indent=2)
    os.replace(temporary, path)


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m web.api_keys",
        description="Make, list and revoke the API keys of the OpenAI-compatible API (/v1). "
        "Keys are stored hashed in API_KEYS_FILE (default DATA_DIR/api-keys.json).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="make a key for a user and print it (it is shown only once)")
    new.add_argument("user")
    new.add_argument("--label", default="", help="a note to tell a user's keys apart, such as the machine")
    listing = commands.add_parser("list", help="list the keys (never the keys themselves)")
    listing.add_argument("user", nargs="?")
    revoke = commands.add_parser("revoke", help="revoke a key by its id (the part after `ka-`)")
    revoke.add_argument("id")
    args = parser.parse_args(argv)

    settings = settings or Settings()
    path = settings.api_keys_path
    try:
        keys = read_keys(path)
    except ApiKeyFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.command == "new":
        if settings.login_required:
            try:
                users = load_users(settings)
            except UserListError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
            if args.user not in users:
                print(f"error: {args.user} is not in the user list (AUTH_USERS_FILE, AUTH_USERS).", file=sys.stderr)
                return 2
        key, stored = make_key(args.user, args.label)
        write_keys(path, [*keys, stored])
        print(key)
        print(
            f"Key {stored.id} for {args.user}, kept hashed in {path}. Copy it now: it is not shown again.",
            file=sys.stderr,
        )
        return 0
    if args.command == "list":
        for stored_key in keys:
            if args.user in (None, stored_key.user):
                print(f"{stored_key.id}\t{stored_key.user}\t{stored_key.created}\t{stored_key.label}")
        return 0
    kept = [stored_key for stored_key in keys if stored_key.id != args.id.removeprefix(f"{PREFIX}-")]
    if len(kept) == len(keys):
        print(f"error: no key has the id {args.id}.", file=sys.stderr)
        return 1
    write_keys(path, kept)
    print(f"Revoked key {args.id}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
