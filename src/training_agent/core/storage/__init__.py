"""Object storage by URL: gs:// through google-cloud-storage, file:// (or a path) on the local disk."""

from __future__ import annotations

from pathlib import Path

from training_agent.core.settings import Settings
from training_agent.core.storage import local
from training_agent.core.storage.gcs import GcsBackend, make_client
from training_agent.core.storage.urls import GcsURL, join_url, parse_gcs_url, parse_url

__all__ = ["ObjectStorage", "join_url", "parse_gcs_url", "parse_url"]


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

    def upload(self, src: Path, url: str) -> None:
        parsed = parse_url(url)
        if isinstance(parsed, GcsURL):
            self.gcs.upload(src, parsed)
        else:
            local.upload(src, parsed.path)

    def exists(self, url: str) -> bool:
        parsed = parse_url(url)
        if isinstance(parsed, GcsURL):
            return self.gcs.exists(parsed)
        return local.exists(parsed.path)

    def delete(self, url: str) -> None:
        parsed = parse_url(url)
        if isinstance(parsed, GcsURL):
            self.gcs.delete(parsed)
        else:
            local.delete(parsed.path)
