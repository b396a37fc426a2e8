"""Google Cloud Storage through google-cloud-storage.

Credentials come from GOOGLE_APPLICATION_CREDENTIALS (Requirement 2.3/6.2) or, without it, Application
Default Credentials (workload identity on GKE). With STORAGE_EMULATOR_HOST set the client talks to an
emulator with anonymous credentials.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from training_agent.core.errors import ObjectNotFoundError, StorageError
from training_agent.core.storage.objects import ObjectInfo, PreconditionFailedError
from training_agent.core.storage.urls import GcsURL

T = TypeVar("T")


def make_client(credentials_file: Path | None, project: str | None) -> Any:
    try:
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            return storage.Client(project=project or "local", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
        if credentials_file is not None:
            return storage.Client.from_service_account_json(str(credentials_file), project=project)
        return storage.Client(project=project)
    except auth_exc.DefaultCredentialsError as exc:
        raise StorageError(
            "No Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS to a service account key "
            f"file, or run where Application Default Credentials exist ({exc})"
        ) from exc
    except (ValueError, OSError) as exc:
        raise StorageError(f"Cannot load the GCS credentials from {credentials_file}: {exc}") from exc


class GcsBackend:
    """Blob operations on gs:// URLs, with errors that say which object and why."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def _blob(self, url: GcsURL) -> Any:
        return self.client.bucket(url.bucket).blob(url.blob)

    def _call(self, url: GcsURL, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except gexc.PreconditionFailed as exc:
            raise PreconditionFailedError(
                f"Cannot {what} {url}: it changed meanwhile ({exc.message})"
            ) from exc
        except gexc.NotFound as exc:
            raise ObjectNotFoundError(f"{url} does not exist (no such object or bucket)") from exc
        except gexc.Forbidden as exc:
            raise StorageError(f"Permission denied to {what} {url}: {exc.message}") from exc
        except gexc.GoogleAPIError as exc:
            raise StorageError(f"Cannot {what} {url}: {exc}") from exc
        except (auth_exc.GoogleAuthError, OSError) as exc:
            raise StorageError(f"Cannot {what} {url}: {exc}") from exc

    def download(self, url: GcsURL, dest: Path) -> None:
        self._call(url, "download", lambda: self._blob(url).download_to_filename(str(dest)))

    def read_range(self, url: GcsURL, start: int, end: int) -> bytes:
        """One ranged GET of bytes `start` to `end` (exclusive; GCS's own `end` is inclusive)."""
        data = self._call(url, "read", lambda: self._blob(url).download_as_bytes(start=start, end=end - 1))
        return bytes(data)

    def upload(
        self,
        src: Path,
        url: GcsURL,
        *,
        metadata: dict[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> ObjectInfo:
        """Upload `src` as `url` (a GCS object appears whole or not at all, so no temporary name is
        needed); `if_generation_match=0` creates only, another number replaces only that generation."""
        blob = self._blob(url)
        if metadata:
            blob.metadata = metadata

        def put() -> None:
            blob.upload_from_filename(str(src), if_generation_match=if_generation_match)

        self._call(url, "upload to", put)
        return ObjectInfo(
            generation=int(blob.generation or 0),
            size=int(blob.size or src.stat().st_size),
            metadata=dict(blob.metadata or metadata or {}),
        )

    def stat(self, url: GcsURL) -> ObjectInfo | None:
        blob = self._call(url, "read", lambda: self.client.bucket(url.bucket).get_blob(url.blob))
        if blob is None:
            return None
        return ObjectInfo(
            generation=int(blob.generation or 0), size=int(blob.size or 0), metadata=dict(blob.metadata or {})
        )

    def list(self, bucket: str, prefix: str) -> list[str]:
        """The names of the objects under `prefix`."""
        where = GcsURL(bucket, prefix)
        return sorted(
            self._call(where, "list", lambda: [b.name for b in self.client.list_blobs(bucket, prefix=prefix)])
        )

    def exists(self, url: GcsURL) -> bool:
        return bool(self._call(url, "check", lambda: self._blob(url).exists()))

    def delete(self, url: GcsURL, *, if_generation_match: int | None = None) -> None:
        with contextlib.suppress(ObjectNotFoundError):  # already gone is what we wanted
            self._call(url, "delete", lambda: self._blob(url).delete(if_generation_match=if_generation_match))

    def ping(self, bucket: str) -> None:
        self._call(GcsURL(bucket, ""), "reach the bucket", lambda: self.client.get_bucket(bucket))
