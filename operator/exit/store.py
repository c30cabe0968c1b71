"""Where archives go: a directory (a PVC in a cluster; the default) or an S3-compatible
object store (the backup convention of the ecosystem, e.g. CloudNativePG's).

The S3 client is boto3 (AWS's own SDK: multipart uploads with per-part checksums,
retries and every S3-compatible server's quirks handled, maintained weekly); its calls
are blocking, so they run in a worker thread and never stall the operator's loop.
A store is described by a Secret (``kameng-export-store`` in the operator's namespace)
or the operator's environment; credentials are never logged or put in a message.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

# Multipart above 8 MiB, in 8 MiB parts: a 100,000-order site (~60 MiB) goes up in a few
# parts, each checksummed by the server, and one failed part is retried, not the file.
PART_SIZE = 8 << 20


class StoreUnavailable(Exception):
    """The store cannot be reached or refused the upload; the message names no secret."""


class Store(Protocol):
    async def put(self, local: Path, name: str, sha256: str) -> str: ...
    async def get(self, location: str, local: Path) -> None: ...
    async def exists(self, location: str, sha256: str) -> bool: ...


@dataclass(frozen=True)
class FileStore:
    root: Path

    async def put(self, local: Path, name: str, sha256: str) -> str:
        dest = self.root / name
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            await asyncio.to_thread(shutil.copyfile, local, tmp)
            os.replace(tmp, dest)  # readers never see a half-written archive
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {dest}: {exc.strerror}") from None
        return f"file://{dest}"

    async def get(self, location: str, local: Path) -> None:
        await asyncio.to_thread(shutil.copyfile, urlsplit(location).path, local)

    async def exists(self, location: str, sha256: str) -> bool:
        return await asyncio.to_thread(self._exists, location, sha256)

    @staticmethod
    def _exists(location: str, sha256: str) -> bool:
        p = Path(urlsplit(location).path)
        if not p.is_file():
            return False
        h = hashlib.sha256()
        with p.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return h.hexdigest() == sha256


@dataclass(frozen=True)
class S3Store:
    endpoint: str
    bucket: str
    prefix: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str = "us-east-1"

    def _client(self) -> Any:
        import boto3  # heavy import, only when an S3 store is used
        from botocore.config import Config
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=5, read_timeout=60,
                          retries={"max_attempts": 3, "mode": "standard"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))

    def key(self, name: str) -> str:
        return f"{self.prefix.strip('/')}/{name}" if self.prefix.strip("/") else name

    def location(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def _split(self, location: str) -> tuple[str, str]:
        u = urlsplit(location)
        return u.netloc, u.path.lstrip("/")

    def _put(self, local: Path, name: str, sha256: str) -> str:
        from boto3.exceptions import Boto3Error
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError
        client = self._client()
        try:
            # The object's own SHA-256 travels as metadata; each part carries the
            # server-verified x-amz-checksum-sha256, so a corrupted part is refused.
            client.upload_file(
                str(local), self.bucket, self.key(name),
                ExtraArgs={"Metadata": {"sha256": sha256}, "ChecksumAlgorithm": "SHA256"},
                Config=TransferConfig(multipart_threshold=PART_SIZE,
                                      multipart_chunksize=PART_SIZE, max_concurrency=2,
                                      use_threads=True))
            head = client.head_object(Bucket=self.bucket, Key=self.key(name))
        except (BotoCoreError, ClientError, Boto3Error, OSError) as exc:
            # Boto3Error: the transfer manager wraps a refused part (S3UploadFailedError).
            raise StoreUnavailable(f"upload to {self.location(name)} failed: "
                                   f"{_brief(exc)}") from None
        if head.get("ContentLength") != local.stat().st_size:
            raise StoreUnavailable(f"{self.location(name)}: stored size differs from the "
                                   "archive's; the upload is incomplete")
        return self.location(name)

    def _get(self, location: str, local: Path) -> None:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
        bucket, key = self._split(location)
        try:
            self._client().download_file(bucket, key, str(local))
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise StoreUnavailable(f"download of {location} failed: {_brief(exc)}") from None

    def _exists(self, location: str, sha256: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError
        bucket, key = self._split(location)
        try:
            head = self._client().head_object(Bucket=bucket, Key=key)
        except ClientError:
            return False
        except BotoCoreError as exc:
            raise StoreUnavailable(f"{location}: {_brief(exc)}") from None
        return (head.get("Metadata") or {}).get("sha256") == sha256

    async def put(self, local: Path, name: str, sha256: str) -> str:
        return await asyncio.to_thread(self._put, local, name, sha256)

    async def get(self, location: str, local: Path) -> None:
        await asyncio.to_thread(self._get, location, local)

    async def exists(self, location: str, sha256: str) -> bool:
        return await asyncio.to_thread(self._exists, location, sha256)


def _brief(exc: BaseException) -> str:
    # botocore messages name the endpoint and the operation, never the credentials.
    return f"{type(exc).__name__}: {str(exc)[:300]}"


# Keys of the store Secret (and the matching environment variables, KAMENG_EXPORT_<KEY>).
STORE_KEYS = ("endpoint", "bucket", "prefix", "accessKeyId", "secretAccessKey", "region")
DEFAULT_DIR = "/var/lib/kameng/exports"


def from_settings(settings: dict[str, str], default_dir: str = DEFAULT_DIR) -> Store:
    """A store from the Secret's (or environment's) values: S3 when a bucket is named,
    else the directory ``dir`` (default: the operator's export volume)."""
    if settings.get("bucket"):
        missing = [k for k in ("endpoint", "accessKeyId", "secretAccessKey")
                   if not settings.get(k)]
        if missing:
            raise StoreUnavailable(f"export store names bucket {settings['bucket']!r} but "
                                   f"lacks {', '.join(missing)}")
        return S3Store(settings["endpoint"], settings["bucket"], settings.get("prefix", ""),
                       settings["accessKeyId"], settings["secretAccessKey"],
                       settings.get("region") or "us-east-1")
    return FileStore(Path(settings.get("dir") or default_dir))


def for_location(location: str, settings: dict[str, str]) -> Store:
    """The store to read ``location`` back from (restore)."""
    if location.startswith("s3://"):
        return from_settings({**settings, "bucket": urlsplit(location).netloc})
    return FileStore(Path("/"))


def decode_secret(data: dict[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}
