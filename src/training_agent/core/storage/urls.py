"""Object URLs: `gs://bucket/path` for Google Cloud Storage, `file://` or a plain path for local files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from training_agent.core.errors import InvalidInputError

GCS_SCHEME = "gs://"
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@dataclass(frozen=True)
class GcsURL:
    bucket: str
    blob: str

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.blob}"


@dataclass(frozen=True)
class LocalURL:
    path: Path

    def __str__(self) -> str:
        return self.path.as_uri()


ObjectURL = GcsURL | LocalURL


def is_gcs_url(url: str) -> bool:
    """Whether `url` names Google Cloud Storage (well formed or not: `parse_gcs_url` says what is wrong)."""
    return url.startswith(GCS_SCHEME)


def _split_gcs(url: str) -> tuple[str, str]:
    """`gs://bucket/rest` as (bucket, rest), the bucket name checked; the one place that reads gs:// URLs."""
    if not is_gcs_url(url):
        raise InvalidInputError(f"{url!r} is not a gs:// URL; expected gs://<bucket>/<path>")
    bucket, _, blob = url[len(GCS_SCHEME) :].partition("/")
    if not bucket:
        raise InvalidInputError(f"{url!r} has no bucket name; expected gs://<bucket>/<path>")
    if not _BUCKET_RE.match(bucket):
        raise InvalidInputError(
            f"{url!r}: {bucket!r} is not a valid bucket name (lowercase letters, digits, '-', '_', '.')"
        )
    return bucket, blob


def parse_gcs_prefix(url: str) -> GcsURL:
    """`gs://bucket/some/prefix` for listing: the blob part is a name prefix, possibly empty or ending
    in '/' (a folder)."""
    bucket, prefix = _split_gcs(url)
    return GcsURL(bucket=bucket, blob=prefix)


def parse_gcs_url(url: str) -> GcsURL:
    """Split `gs://bucket/path/to/object` (Requirement 2.2), refusing anything that is not one."""
    bucket, blob = _split_gcs(url)
    if not blob or blob.endswith("/"):
        raise InvalidInputError(
            f"{url!r} names a bucket or folder, not an object; expected gs://{bucket}/<path>"
        )
    if any(ch in blob for ch in "\r\n") or "//" in blob:
        raise InvalidInputError(f"{url!r} has an invalid object path")
    return GcsURL(bucket=bucket, blob=blob)


def parse_url(url: str) -> ObjectURL:
    """Parse any URL this project accepts for a dataset, a weights file or a model."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError("The object URL is empty; expected gs://<bucket>/<path> or a local path")
    url = url.strip()
    if is_gcs_url(url):
        return parse_gcs_url(url)
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidInputError(f"{url!r}: file URLs must name a local path (file:///...)")
        return LocalURL(Path(unquote(parts.path)))
    if parts.scheme and len(parts.scheme) > 1:  # a one-letter "scheme" is a Windows drive
        raise InvalidInputError(
            f"Unsupported URL scheme {parts.scheme!r} in {url!r}: use gs://<bucket>/<path> or a local path"
        )
    return LocalURL(Path(url).expanduser().resolve())


def join_url(root: str, key: str) -> str:
    """`root` (gs://bucket or file:///dir) joined with an object key such as `models/x.pth`."""
    return root.rstrip("/") + "/" + key.lstrip("/")
