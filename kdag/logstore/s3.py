"""Logs in S3 or any S3-compatible store, through boto3.

Credentials and region come the usual boto3 way (variables, files, roles);
`endpoint_url` points at MinIO, Ceph or moto. Errors from botocore become
TemporaryError (try again) or NotFound here, and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import Boto3Error
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from kdag.errors import NotFound, TemporaryError


class S3Backend:
    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        # NB: short, because a task's end is reported once its upload is over
        # or failed; a failed one is retried later from the spool.
        config = Config(
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=10,
        )
        self.client: Any = boto3.client("s3", endpoint_url=endpoint_url, config=config)

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, path: Path) -> None:
        try:
            self.client.upload_file(
                str(path),
                self.bucket,
                self._object(key),
                ExtraArgs={"ContentType": "text/plain; charset=utf-8"},
            )
        except (Boto3Error, BotoCoreError, ClientError, OSError) as error:
            raise TemporaryError(f"cannot upload {self.uri(key)}: {error}") from error

    def get(self, key: str) -> bytes:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._object(key))
            body: bytes = answer["Body"].read()
            return body
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound(f"no log at {self.uri(key)}") from error
            raise TemporaryError(f"cannot read {self.uri(key)}: {error}") from error
        except BotoCoreError as error:
            raise TemporaryError(f"cannot read {self.uri(key)}: {error}") from error

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object(key)}"
