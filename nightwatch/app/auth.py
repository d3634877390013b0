"""Who may read and write through the API and the console.

- Writes (submit, cancel, retry) need a bearer token listed in ``server.auth.tokens`` or a
  console session signed in with one; with no token configured, writes are switched off.
- Reads are open unless ``server.auth.read`` is true; then they need the same.
- The console signs in with a token and keeps a signed session cookie (Starlette's
  SessionMiddleware); the session remembers a fingerprint of the token, so removing a token
  from the config ends the sessions made with it. Each session carries a CSRF token that
  every form (and a session-authenticated API POST, in ``X-CSRF-Token``) must echo.

Tokens are compared with ``hmac.compare_digest`` against every configured token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request

CSRF_HEADER = "x-csrf-token"
_FINGERPRINT, _CSRF = "token_sha256", "csrf"


@dataclass(frozen=True)
class AuthSettings:
    """``server.auth`` and ``server.max_body`` of the config."""

    tokens: tuple[str, ...] = ()
    read: bool = False  # reads need a token (or a session) too
    session_secret: str | None = None  # None: a random secret per process
    secure_cookies: bool = False  # the session cookie is sent over HTTPS only
    max_body: int = 64 * 1024

    @classmethod
    def from_config(cls, server: dict[str, Any]) -> AuthSettings:
        auth = server.get("auth") or {}
        return cls(tokens=tuple(auth.get("tokens") or ()), read=bool(auth.get("read")),
                   session_secret=auth.get("session_secret") or None,
                   secure_cookies=bool(auth.get("secure_cookies")), max_body=int(server.get("max_body", 65536)))


def _settings(request: Request) -> AuthSettings:
    settings: AuthSettings = request.app.state.ctx.auth
    return settings


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _valid(settings: AuthSettings, token: str | None) -> str | None:
    """The configured token ``token`` equals (compared in constant time with each), or None."""
    if not token:
        return None
    given = token.encode("utf-8", "surrogatepass")
    found = None
    for candidate in settings.tokens:  # no early exit: the time does not tell which one matched
        if hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), given):
            found = candidate
    return found


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def bearer_ok(request: Request) -> bool:
    """The request carries a bearer token that is one of ``server.auth.tokens``."""
    return _valid(_settings(request), bearer(request)) is not None


def _session(request: Request) -> dict[str, Any]:
    return request.session if "session" in request.scope else {}


def _session_ok(request: Request) -> bool:
    mark = _session(request).get(_FINGERPRINT)
    if not isinstance(mark, str):
        return False
    marks = [_fingerprint(t) for t in _settings(request).tokens]
    return any([hmac.compare_digest(mark, m) for m in marks])


def writes_enabled(ctx: Any) -> bool:
    """False when no token is configured: nobody can submit, cancel or retry."""
    return bool(ctx.auth.tokens)


def can_write(request: Request) -> bool:
    settings = _settings(request)
    if not settings.tokens:
        return False
    return bearer_ok(request) or _session_ok(request)


def can_read(request: Request) -> bool:
    return not _settings(request).read or can_write(request)


def sign_in(request: Request, token: str) -> bool:
    """Start a session for a valid token (a fresh session and CSRF token); False otherwise."""
    found = _valid(_settings(request), token)
    if found is None:
        return False
    session = request.session
    session.clear()
    session[_FINGERPRINT] = _fingerprint(found)
    session[_CSRF] = secrets.token_urlsafe(32)
    return True


def sign_out(request: Request) -> None:
    _session(request).clear()


def signed_in(request: Request) -> bool:
    return _session_ok(request)


def csrf_token(request: Request) -> str:
    """This session's CSRF token (made on first use and kept in the session)."""
    session = request.session
    token = session.get(_CSRF)
    if not isinstance(token, str) or not token:
        token = session[_CSRF] = secrets.token_urlsafe(32)
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    """403 unless ``submitted`` is this session's CSRF token."""
    expected = _session(request).get(_CSRF)
    if not isinstance(expected, str) or not expected or not isinstance(submitted, str) \
            or not hmac.compare_digest(expected.encode(), submitted.encode("utf-8", "surrogatepass")):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
