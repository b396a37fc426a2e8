"""Errors the API turns into HTTP responses: always JSON `{"detail": ...}`."""

from __future__ import annotations


class ApiError(Exception):
    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class BadRequest(ApiError):
    status_code = 400


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class Unavailable(ApiError):
    status_code = 503
