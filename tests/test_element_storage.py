"""Saved elements and uploads in an S3 bucket instead of a folder: Chainlit's own S3 client, against
moto's S3-compatible server, behind the same storage-client interface as the folder store."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import boto3
import pytest

from tests.chainlit_client import ChainlitClient
from tests.servers import PROJECT_ROOT, chainlit_app, clean_environment, free_port, running
from tests.test_chainlit_app import NIGHTJAR, answer_message

BUCKET = "assistant-elements"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
QUESTION = "When does Project Nightjar launch?"


@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> Iterator[str]:
    """moto's S3 server in its own process, with an empty bucket; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    log = tmp_path_factory.mktemp("s3") / "moto.log"
    with running(command, f"{url}/moto-api/", log, clean_environment(CREDENTIALS), PROJECT_ROOT):
        boto3.client("s3", endpoint_url=url, **_boto_credentials()).create_bucket(Bucket=BUCKET)
        yield url


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


async def test_a_chat_saved_with_its_elements_in_a_bucket_reopens_with_its_upload_and_sources(s3, tmp_path):
    env = {
        **CREDENTIALS,
        "ELEMENTS_S3_BUCKET": BUCKET,
        "ELEMENTS_S3_ENDPOINT_URL": s3,
        "DATA_DIR": str(tmp_path / "data"),
        "MODEL_CACHE_DIR": str(tmp_path / "models"),
        "MAX_TOKENS": "32",
        "ROUTER_MODE": "off",
    }
    with chainlit_app(tmp_path / "first.log", env) as url:
        client = ChainlitClient(url)
        await client.connect()
        file_id = await client.upload("nightjar.md", NIGHTJAR, "text/markdown")
        answer_message(await client.ask(QUESTION, file_ids=(file_id,)))
        [thread] = (await client.http.post("/project/threads", json={"pagination": {"first": 1}, "filter": {}})).json()[
            "data"
        ]
        await client.close()
    stored = boto3.client("s3", endpoint_url=s3, **_boto_credentials()).list_objects_v2(Bucket=BUCKET)
    assert any(item["Key"].endswith("/nightjar.md") for item in stored.get("Contents", []))
    assert not (tmp_path / "data" / "elements").exists()

    with chainlit_app(tmp_path / "second.log", env) as url:
        client = ChainlitClient(url)
        opened = await client.connect(thread_id=thread["id"])
        turn = await client.ask(QUESTION)
        # The new answer cites the upload, restored from the bucket into the reopened chat.
        [source] = [element for element in turn.named("element") if element["name"] == "[1]"]
        assert "nightjar.md" in await client.element_text(source)
        # The saved chat's own sources come to the page as the bucket's signed URLs.
        saved = (await client.http.get(f"/project/thread/{thread['id']}")).json()
        [first_source] = [element for element in saved["elements"] if element["name"] == "[1]"][:1]
        assert first_source["url"].startswith(s3)
        assert "nightjar.md" in await client.element_text(first_source)
        await client.close()
    assert not [message for message in opened.messages if "Not restored" in message.get("output", "")]
