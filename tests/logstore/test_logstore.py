"""Log stores through real parts: a folder on disk, and S3 through moto's
server mode over HTTP with the real boto3 client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from kdag.errors import NotFound
from kdag.logstore import LogStore, log_key, open_store


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def spool(store: LogStore, key: str, text: str) -> None:
    store.spool_path(key).write_text(text)


def test_a_file_store_keeps_the_log_under_its_uri(tmp_path: Path) -> None:
    store = open_store((tmp_path / "logs").as_uri(), spool_dir=tmp_path / "spool")
    key = log_key("d", 1, "t", 1)
    spool(store, key, "hello\n")

    assert store.upload(key)
    assert store.uri(key) == (tmp_path / "logs" / "d/1/t/1.log").as_uri()
    assert store.read(key) == b"hello\n"
    assert not (tmp_path / "spool" / key).exists()
    with pytest.raises(NotFound):
        store.read(log_key("d", 1, "t", 2))


def test_an_s3_store_uploads_and_reads_back(
    s3_endpoint: str, aws_env: None, tmp_path: Path
) -> None:
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="logs-ok")
    store = open_store(
        "s3://logs-ok/kdag/prod",
        spool_dir=tmp_path / "spool",
        s3_endpoint_url=s3_endpoint,
    )
    key = log_key("d", 7, "t", 2)
    spool(store, key, "from S3\n")

    assert store.upload(key)
    assert store.uri(key) == "s3://logs-ok/kdag/prod/d/7/t/2.log"
    assert store.read(key) == b"from S3\n"
    raw = boto3.client("s3", endpoint_url=s3_endpoint).get_object(
        Bucket="logs-ok", Key="kdag/prod/d/7/t/2.log"
    )
    assert raw["Body"].read() == b"from S3\n"
    with pytest.raises(NotFound):
        store.read(log_key("d", 7, "t", 3))


def test_a_failed_upload_keeps_the_log_and_a_later_retry_sends_it(
    s3_endpoint: str, aws_env: None, tmp_path: Path
) -> None:
    store = open_store(
        "s3://logs-later", spool_dir=tmp_path / "spool", s3_endpoint_url=s3_endpoint
    )
    key = log_key("d", 1, "t", 1)
    spool(store, key, "precious\n")

    assert not store.upload(key)  # the bucket does not exist yet
    assert store.read(key) == b"precious\n"  # still readable, from the spool

    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="logs-later")
    assert store.retry_pending(busy={"other/1/t/1.log"}) == 1
    assert not (tmp_path / "spool" / key).exists()
    assert store.read(key) == b"precious\n"


def test_retry_leaves_the_logs_of_running_attempts_alone(tmp_path: Path) -> None:
    store = open_store((tmp_path / "logs").as_uri(), spool_dir=tmp_path / "spool")
    key = log_key("d", 1, "t", 1)
    spool(store, key, "still being written\n")

    assert store.retry_pending(busy={key}) == 0
    assert (tmp_path / "spool" / key).exists()


def test_a_folder_that_cannot_be_written_keeps_the_log_pending(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log folder should be")
    store = open_store((blocker / "logs").as_uri(), spool_dir=tmp_path / "spool")
    key = log_key("d", 1, "t", 1)
    spool(store, key, "kept\n")

    assert store.upload(key) is False  # not raised: the attempt still ends
    assert store.spool_path(key).read_text() == "kept\n"

    # Once the folder can be made, the retry stores it.
    blocker.unlink()
    assert store.retry_pending() == 1
    assert store.read(key) == b"kept\n"
