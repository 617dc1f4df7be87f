"""A store in S3-compatible object storage (AWS S3, Ceph RGW, MinIO, Backblaze B2, ...).

Streaming both ways, in flat memory: a put sends the stream in parts of `part_size` bytes
(multipart upload above one part), a get hands back the response body to read in chunks. An
object appears only when its upload completes, so a key is either absent or whole; a failed
multipart upload is aborted so that no parts are left behind (and billed).

Each put sends a SHA-256 of every part (`x-amz-checksum-sha256`), which the service checks on
arrival and refuses on mismatch. Not every S3-compatible service does (some only echo the value
back), so the store first proves it: a probe put with a wrong checksum must be refused. Then a put
whose every part was confirmed comes back `checksum_confirmed` and the archive need not read the
copy back (no egress); otherwise it reads it back.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
from collections.abc import Iterator
from typing import Any, BinaryIO

from arkhiv.storage.base import KeyNotFound, StoredObject, StoreError, StoreHealth
from arkhiv.storage.local import check_key

DEFAULT_PART_SIZE = 16 << 20  # S3 needs at least 5 MiB per part but the last
PROBE_KEY = ".arkhiv/checksum-probe"


class S3Store:
    def __init__(
        self,
        name: str,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_attempts: int = 5,
        trust_checksums: bool = True,
        client: Any = None,
    ) -> None:
        if part_size < 5 << 20:
            raise ValueError("S3 parts must be at least 5 MiB")
        self.name = name
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self._trust_checksums = trust_checksums
        self._service_checks: bool | None = None  # learnt from the probe, once
        if client is None:
            import boto3
            from botocore.config import Config

            def connect(attempts: int) -> Any:
                return boto3.client(
                    "s3",
                    endpoint_url=endpoint_url,
                    region_name=region_name,
                    aws_access_key_id=access_key_id,
                    aws_secret_access_key=secret_access_key,
                    config=Config(
                        retries={"max_attempts": attempts, "mode": "standard"},
                        connect_timeout=10,
                        read_timeout=120,
                    ),
                )

            self.client = connect(max_attempts)
            # botocore retries a refused checksum (a transfer may have been garbled); the probe
            # expects the refusal, so it asks once.
            self._probe_client = connect(1)
        else:
            self.client = self._probe_client = client

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _errors(self, action: str, key: str):
        return _Translated(self.name, action, key)

    @property
    def confirms_checksums(self) -> bool:
        """Whether the service refuses a put whose bytes do not match the checksum sent (a
        probe put with a wrong one, once per store). False while it cannot be reached."""
        if not self._trust_checksums:
            return False
        if self._service_checks is None:
            from botocore.exceptions import BotoCoreError, ClientError

            target = self._key(PROBE_KEY)
            try:
                self._probe_client.put_object(
                    Bucket=self.bucket,
                    Key=target,
                    Body=b"arkhiv checksum probe",
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=_sha256_b64(b"not these bytes"),
                )
            except ClientError as exc:
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status != 400:
                    return False  # denied, throttled...: ask again next time
                self._service_checks = self.head(PROBE_KEY) is None
            except BotoCoreError:
                return False
            else:
                self._service_checks = False
                with contextlib.suppress(Exception):
                    self.client.delete_object(Bucket=self.bucket, Key=target)
        return self._service_checks

    def put(self, key: str, stream: BinaryIO) -> StoredObject:
        target = self._key(key)
        first = _read_full(stream, self.part_size)
        with self._errors("put", key):
            if len(first) < self.part_size:
                checksum = _sha256_b64(first)
                answer = self.client.put_object(
                    Bucket=self.bucket,
                    Key=target,
                    Body=first,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=checksum,
                )
                confirmed = answer.get("ChecksumSHA256") == checksum and self.confirms_checksums
                return StoredObject(key, len(first), confirmed)
            upload = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=target, ChecksumAlgorithm="SHA256"
            )["UploadId"]
        try:
            parts = []
            echoed = True  # every part's checksum came back as sent
            size = 0
            part = first
            number = 1
            while part:
                checksum = _sha256_b64(part)
                with self._errors("put", key):
                    answer = self.client.upload_part(
                        Bucket=self.bucket,
                        Key=target,
                        UploadId=upload,
                        PartNumber=number,
                        Body=part,
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=checksum,
                    )
                echoed = echoed and answer.get("ChecksumSHA256") == checksum
                parts.append(
                    {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}
                )
                size += len(part)
                number += 1
                part = _read_full(stream, self.part_size)
            with self._errors("put", key):
                completed = self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=target,
                    UploadId=upload,
                    MultipartUpload={"Parts": parts},
                )
            # The object's checksum, where the service gives it, is the SHA-256 of the parts'.
            composite = completed.get("ChecksumSHA256")
            if composite and composite.partition("-")[0] != _composite(parts):
                echoed = False
        except BaseException:
            # The original error matters more; a bucket lifecycle rule cleans up if this fails.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=target, UploadId=upload)
            raise
        return StoredObject(key, size, echoed and self.confirms_checksums)

    def open(self, key: str) -> BinaryIO:
        with self._errors("get", key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        return _Body(body)

    def head(self, key: str) -> StoredObject | None:
        try:
            with self._errors("head", key):
                answer = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except KeyNotFound:
            return None
        return StoredObject(key, answer["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[StoredObject]:
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors("list", prefix):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    yield StoredObject(item["Key"][len(base) :], item["Size"])

    def delete(self, key: str) -> None:
        if self.head(key) is None:  # S3 deletes silently; the protocol says what was there
            raise KeyNotFound(key)
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def health(self) -> StoreHealth:
        try:
            with self._errors("head", ""):
                self.client.head_bucket(Bucket=self.bucket)
        except StoreError as exc:
            return StoreHealth(False, False, None, str(exc))
        return StoreHealth(True, True, None, "")


def _read_full(stream: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes: a short read from a pipe or socket is not the end of the stream."""
    chunks = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _composite(parts: list[dict[str, Any]]) -> str:
    joined = b"".join(base64.b64decode(part["ChecksumSHA256"]) for part in parts)
    return base64.b64encode(hashlib.sha256(joined).digest()).decode()


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class _Body(io.RawIOBase):
    """The response body as a readable binary stream (a context manager, closed after use)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._body.read(None if size is None or size < 0 else size)

    def readinto(self, buffer) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class _Translated:
    """botocore's errors as the Store protocol's: a missing key is KeyNotFound, anything else
    (unreachable endpoint, denied, throttled past retries) a StoreError naming the store."""

    def __init__(self, store: str, action: str, key: str) -> None:
        self.store, self.action, self.key = store, action, key

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, exc, _traceback) -> bool:
        if exc is None:
            return False
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise KeyNotFound(self.key) from None
            raise StoreError(f"{self.store}: {self.action} {self.key!r}: {code}: {exc}") from exc
        if isinstance(exc, BotoCoreError):
            raise StoreError(f"{self.store}: {self.action} {self.key!r}: {exc}") from exc
        return False
