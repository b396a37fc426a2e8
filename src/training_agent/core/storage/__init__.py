"""Object storage by URL: gs:// through google-cloud-storage, file:// (or a path) on the local disk."""

from __future__ import annotations

from pathlib import Path

from training_agent.core.settings import Settings
from training_agent.core.storage import local
from training_agent.core.storage.gcs import GcsBackend, make_client
from training_agent.core.storage.objects import ObjectInfo, PreconditionFailedError, owner_metadata
from training_agent.core.storage.urls import (
    GcsURL,
    LocalURL,
    is_gcs_url,
    join_url,
    parse_gcs_prefix,
    parse_gcs_url,
    parse_url,
)

__all__ = [
    "ObjectInfo",
    "ObjectStorage",
    "PreconditionFailedError",
    "is_gcs_url",
    "join_url",
    "owner_metadata",
    "parse_gcs_url",
    "parse_url",
]


class ObjectStorage:
    """Routes each URL to its backend. The GCS client is only built when a gs:// URL is used, so the
    embedded mode needs no Google credentials at all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._gcs: GcsBackend | None = None

    @property
    def gcs(self) -> GcsBackend:
        if self._gcs is None:
            client = make_client(self.settings.google_application_credentials, self.settings.gcp_project)
            self._gcs = GcsBackend(client)
        return self._gcs

    def model_url(self, key: str) -> str:
        """The URL of `key` in the configured bucket (or the local folder standing in for it)."""
        return join_url(self.settings.model_store_root, key)

    def download(self, url: str, dest: Path) -> None:
        parsed = parse_url(url)
        if isinstance(parsed, GcsURL):
            self.gcs.download(parsed, dest)
        else:
            local.download(parsed.path, dest)

    def upload(
        self,
        src: Path,
        url: str,
        *,
        metadata: dict[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> ObjectInfo:
        """Write `src` as `url` with custom `metadata`; `if_generation_match=0` only creates, another
        generation only replaces that one (PreconditionFailedError otherwise). Returns what was written."""
        parsed = parse_url(url)
        if isinstance(parsed, GcsURL):
            return self.gcs.upload(src, parsed, metadata=metadata, if_generation_match=if_generation_match)
        try:
            return local.upload(src, parsed.path, metadata=metadata, if_generation_match=if_generation_match)
        except PreconditionFailedError:
            # Refused: the folders made for it must not stay behind (a bucket has no empty folders).
            local.remove_empty_parents(parsed.path.parent, self.settings.resolved_local_bucket_dir.resolve())
            raise

    def stat(self, url: str) -> ObjectInfo | None:
        """The object's generation, size and metadata, or None when it does not exist."""
        parsed = parse_url(url)
        if isinstance(parsed, GcsURL):
            return self.gcs.stat(parsed)
        return local.stat(parsed.path)

    def read_range(self, url: str, start: int, end: int) -> bytes:
        """Bytes `start` up to `end` (exclusive) of the object, read without fetching the rest of it: how
        the pre-flight reads a zip's central directory. Fewer bytes come back when the object is shorter."""
        if end <= start:
            return b""
        parsed = parse_url(url)
        if isinstance(parsed, GcsURL):
            return self.gcs.read_range(parsed, start, end)
        return local.read_range(parsed.path, start, end)

    def list(self, prefix_url: str) -> list[str]:
        """The URLs of every object whose URL starts with `prefix_url` (end it with '/' for a folder)."""
        if is_gcs_url(prefix_url):
            where = parse_gcs_prefix(prefix_url)
            return [str(GcsURL(where.bucket, name)) for name in self.gcs.list(where.bucket, where.blob)]
        parsed = parse_url(prefix_url.rstrip("/"))
        assert isinstance(parsed, LocalURL)
        prefix = str(parsed.path) + ("/" if prefix_url.endswith("/") else "")
        return [path.as_uri() for path in local.list_prefix(prefix)]

    def exists(self, url: str) -> bool:
        parsed = parse_url(url)
        if isinstance(parsed, GcsURL):
            return self.gcs.exists(parsed)
        return local.exists(parsed.path)

    def delete(self, url: str, *, if_generation_match: int | None = None) -> None:
        """Remove the object (already gone is fine); with `if_generation_match`, only that generation."""
        parsed = parse_url(url)
        if isinstance(parsed, GcsURL):
            self.gcs.delete(parsed, if_generation_match=if_generation_match)
        else:
            root = self.settings.resolved_local_bucket_dir.resolve()
            local.delete(parsed.path, if_generation_match=if_generation_match, root=root)
