"""The user list for optional login, and password hashes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from models.settings import Settings
from tests.servers import PROJECT_ROOT, clean_environment, run_command
from web.accounts import UserListError, hash_password, load_users, verify_password


def test_a_password_verifies_against_its_own_hash_only():
    stored = hash_password("correct horse")

    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)
    assert "correct horse" not in stored


def test_equal_passwords_hash_differently():
    assert hash_password("same password") != hash_password("same password")


def test_a_malformed_hash_never_verifies():
    assert not verify_password("anything", "scrypt$not$a$hash")
    assert not verify_password("anything", "plain-text-password")


def test_login_is_off_without_a_user_list():
    assert not Settings(_env_file=None).login_required


def test_users_come_from_the_file_and_the_variable(tmp_path):
    alice, bob = hash_password("alice password"), hash_password("bob password")
    users_file = tmp_path / "users"
    users_file.write_text(f"# team\nalice:{alice}\n\n")

    settings = Settings(_env_file=None, auth_users_file=users_file, auth_users=f"bob:{bob}")

    assert settings.login_required
    assert load_users(settings) == {"alice": alice, "bob": bob}


def test_a_plain_text_password_is_refused_with_where_it_is(tmp_path):
    users_file = tmp_path / "users"
    users_file.write_text("alice:hunter2\n")

    with pytest.raises(UserListError, match=rf"{users_file}:1.*plain-text"):
        load_users(Settings(_env_file=None, auth_users_file=users_file))


def test_a_missing_user_file_is_named(tmp_path):
    with pytest.raises(UserListError, match="cannot be read"):
        load_users(Settings(_env_file=None, auth_users_file=tmp_path / "absent"))


def test_the_command_answers_help_instead_of_taking_it_for_a_name():
    done = run_command("web.accounts", ["--help"])

    assert done.returncode == 0 and "usage: python -m web.accounts" in done.stdout
    assert "--help:" not in done.stdout


def make_user(name: str, typed: str) -> subprocess.CompletedProcess:
    """`python -m web.accounts NAME` in a script: the password comes on standard input, no terminal."""
    return subprocess.run(
        [sys.executable, "-m", "web.accounts", name],
        input=typed,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=clean_environment(),
        check=False,
    )


def test_a_script_gives_the_password_on_standard_input():
    done = make_user("alice", typed="a long enough password\n")

    assert done.returncode == 0, done.stderr
    name, stored = done.stdout.strip().split(":", 1)
    assert name == "alice" and verify_password("a long enough password", stored)


def test_a_short_password_on_standard_input_is_refused_without_a_traceback():
    done = make_user("alice", typed="short\n")

    assert done.returncode == 2 and done.stderr.strip() == "Use at least 8 characters."
