"""API keys: made and revoked by a command, stored hashed, and read again when the file changes."""

from __future__ import annotations

import json

from models.settings import Settings
from tests.servers import run_command
from web.accounts import hash_password
from web.api_keys import ApiKeys, make_key, read_keys, write_keys


def test_a_key_names_its_user_and_only_its_hash_is_stored(tmp_path):
    path = tmp_path / "api-keys.json"
    key, stored = make_key("alice")
    write_keys(path, [stored])

    assert ApiKeys(path).user_of(key) == "alice"
    assert key.split("-", 2)[2] not in path.read_text()


def test_a_wrong_malformed_or_missing_key_belongs_to_nobody(tmp_path):
    path = tmp_path / "api-keys.json"
    key, stored = make_key("alice")
    write_keys(path, [stored])
    keys = ApiKeys(path)

    assert keys.user_of(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert keys.user_of("sk-something") is None and keys.user_of("") is None
    assert ApiKeys(tmp_path / "none.json").user_of(key) is None


def test_a_revoked_key_stops_working_without_a_restart(tmp_path):
    path = tmp_path / "api-keys.json"
    key, stored = make_key("alice")
    write_keys(path, [stored])
    keys = ApiKeys(path)
    assert keys.user_of(key) == "alice"

    write_keys(path, [])

    assert keys.user_of(key) is None


def test_the_command_makes_lists_and_revokes_keys_for_users_on_the_list(tmp_path):
    env = {"API_KEYS_FILE": str(tmp_path / "keys.json"), "AUTH_USERS": f"alice:{hash_password('long password')}"}

    made = run_command("web.api_keys", ["new", "alice", "--label", "laptop"], env)
    refused = run_command("web.api_keys", ["new", "mallory"], env)

    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    [stored] = read_keys(tmp_path / "keys.json")
    assert ApiKeys(tmp_path / "keys.json").user_of(key) == "alice" and stored.label == "laptop"
    assert refused.returncode == 2 and "mallory is not in the user list" in refused.stderr
    listed = run_command("web.api_keys", ["list"], env)
    assert listed.stdout.split("\t")[:2] == [stored.id, "alice"] and key not in listed.stdout
    assert run_command("web.api_keys", ["revoke", stored.id], env).returncode == 0
    assert json.loads((tmp_path / "keys.json").read_text()) == []
    assert run_command("web.api_keys", ["revoke", stored.id], env).returncode == 1


def test_the_keys_file_defaults_to_the_data_folder(tmp_path):
    assert Settings(data_dir=tmp_path).api_keys_path == tmp_path / "api-keys.json"
