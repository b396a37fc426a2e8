from __future__ import annotations

from pathlib import Path

import pytest

from training_agent.core.errors import InvalidInputError
from training_agent.core.storage import join_url, parse_gcs_url, parse_url
from training_agent.core.storage.urls import GcsURL, LocalURL, is_gcs_url, parse_gcs_prefix


def test_parses_gs_urls() -> None:
    assert parse_gcs_url("gs://my-bucket/datasets/p1/data.zip") == GcsURL("my-bucket", "datasets/p1/data.zip")
    assert str(GcsURL("b-1", "x/y.zip")) == "gs://b-1/x/y.zip"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://bucket/x", "not a gs:// URL"),
        ("gs://", "no bucket name"),
        ("gs:///x.zip", "no bucket name"),
        ("gs://UPPER/x.zip", "not a valid bucket name"),
        ("gs://bkt/", "not an object"),
        ("gs://bucket", "not an object"),
        ("gs://bucket/folder/", "not an object"),
        ("gs://bucket/a//b", "invalid object path"),
    ],
)
def test_refuses_malformed_gs_urls(url: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_gcs_url(url)


def test_local_paths_and_file_urls(tmp_path: Path) -> None:
    assert parse_url(str(tmp_path / "a.zip")) == LocalURL(tmp_path / "a.zip")
    assert parse_url((tmp_path / "a b.zip").as_uri()) == LocalURL(tmp_path / "a b.zip")
    assert parse_url("file://localhost/tmp/x.zip") == LocalURL(Path("/tmp/x.zip"))


@pytest.mark.parametrize("url", ["s3://b/x", "https://example.com/x.zip", "file://host/x", "", "   "])
def test_refuses_other_schemes(url: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_url(url)


def test_join_url() -> None:
    assert join_url("gs://b", "models/x.pth") == "gs://b/models/x.pth"
    assert join_url("file:///data/bucket/", "/models/x.pth") == "file:///data/bucket/models/x.pth"


def test_gcs_prefixes_for_listing() -> None:
    assert parse_gcs_prefix("gs://b-1/checkpoints/") == GcsURL("b-1", "checkpoints/")
    assert parse_gcs_prefix("gs://b-1") == GcsURL("b-1", "")
    assert is_gcs_url("gs://b/x") and not is_gcs_url("/data/gs://x")
    with pytest.raises(InvalidInputError, match="not a valid bucket name"):
        parse_gcs_prefix("gs://Bad_Bucket/x/")
