"""/docs and /redoc work without internet: the pages name no other host, and every file they load is served
by the app itself (real HTTP, uvicorn on a free loopback port). Also: CORS lets a browser cancel a run."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from training_agent.api.main import create_app
from training_agent.api.server import background_server

# What a docs page makes the browser fetch: attributes, and the Swagger UI config's quoted paths.
_REFERENCES = re.compile(
    r"""(?:href|src|spec-url)="([^"]+)"|(?:url|oauth2RedirectUrl):[^'"\n]*['"]([^'"]+)['"]"""
)


def _references(html: str) -> list[str]:
    return [a or b for a, b in _REFERENCES.findall(html)]


@pytest.mark.parametrize(
    ("page", "loads"), [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")]
)
def test_docs_pages_need_no_other_host(tmp_path: Path, page: str, loads: str) -> None:
    app = create_app(make_settings(tmp_path))
    with background_server(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as client:
        answer = client.get(page)
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
        html = answer.text
        # No absolute URL at all but the app's own: no CDN, no web fonts, no validator badge.
        others = [url for url in re.findall(r"https?://[^\s'\"<>]+", html) if not url.startswith(base_url)]
        assert others == [], others
        references = _references(html)
        assert any(ref.endswith(loads) for ref in references), references
        assert "/openapi.json" in references
        for ref in references:
            fetched = client.get(ref)
            assert fetched.status_code == 200, (ref, fetched.status_code)
            assert fetched.content, ref


def test_cors_allows_the_cancel_route(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, cors_origins="https://console.example"))
    with background_server(app) as base_url:
        preflight = httpx.options(
            f"{base_url}/agents/training/00000000-0000-0000-0000-000000000000",
            headers={"Origin": "https://console.example", "Access-Control-Request-Method": "DELETE"},
        )
    assert preflight.status_code == 200
    assert "DELETE" in preflight.headers["access-control-allow-methods"]
