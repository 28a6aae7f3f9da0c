"""Who may see the status page and its JSON: with keys configured, an admin, by a bearer
key (`Authorization: Bearer <admin key>`) or by a session cookie that `POST /status/login`
sets; with no keys (open access, loopback only), everyone, like the rest of Turnout.

The cookie (`turnout_status`) holds the admin key's id (the first 12 hex digits of its
digest, as keys are named in logs and limits: never the key) and when the session ends,
signed with HMAC-SHA256 by itsdangerous (a maintained, reviewed signer, rather than
hand-rolled comparison and encoding). The secret is `status_page.session_secret`, else
one kept in the data directory (`host_secret`: every worker of one host, and a restart,
agree on it; replicas on other hosts need the configured secret). A cookie is checked
against the keys configured now: one whose key was removed, or is no longer an admin's
after a reload, is refused.

The cookie's path is `/`, not `/status`: a cookie scoped to `/status` is not sent to
`/status.json` (RFC 6265 path matching: the next character must be `/`), which the page's
script reads. `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
can make the browser send it) and `Secure` over https."""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from itsdangerous import BadSignature, URLSafeSerializer
from litestar import Request

from policies.errors import ApiError
from policies.teams import ANONYMOUS, Caller
from router.auth import require_admin
from router.gateway import Gateway

COOKIE = "turnout_status"
COOKIE_PATH = "/"
SALT = "turnout.status.session"
SECRET_STATE = "status_secret"  # app.state: the host's secret when none is configured
SECRET_FILE = "status-session.key"  # in the data directory (`storage.path`)

log = structlog.get_logger("turnout.status")


@dataclass(frozen=True, slots=True)
class Session:
    key_id: str
    expires_at: float  # wall-clock seconds (the gateway's clock)


def enabled(gateway: Gateway) -> bool:
    return gateway.config.status_page.enabled


def not_found() -> ApiError:
    """What a disabled status page answers: the same as any unknown path."""
    return ApiError("Not Found", status=404, type="invalid_request_error", code="not_found")


def session_secret(request: Request[Any, Any, Any], gateway: Gateway) -> str:
    configured = gateway.config.status_page.session_secret
    if configured:
        return configured
    state = request.app.state
    secret = state.get(SECRET_STATE)
    if secret is None:  # create_app draws it; an app assembled otherwise draws it here
        secret = state[SECRET_STATE] = new_secret()
    return str(secret)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def host_secret(directory: Path) -> str:
    """The secret that signs the page's cookies when the config sets none, kept in
    `directory` (the data directory, which this host's workers share) so that a session
    reaches every worker and outlives a restart. Made once: the first process to link
    its file in wins, and the others read that one; readable by its owner only. Where it
    cannot be kept (a read-only directory), a random one for this process, said in the
    log."""
    path = directory / SECRET_FILE
    try:
        if not path.exists():
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            draft = directory / f".{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
            descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(descriptor, "w") as out:
                    out.write(new_secret())
                    out.flush()
                    os.fsync(out.fileno())
                with contextlib.suppress(FileExistsError):  # another worker's stands
                    os.link(draft, path)  # atomic
            finally:
                draft.unlink(missing_ok=True)
        secret = path.read_text().strip()
        if len(secret) < 32:
            raise OSError(f"{SECRET_FILE} holds no usable secret")
        return secret
    except OSError as exc:
        log.warning("status_secret_not_kept", error=str(exc))
        return new_secret()


def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=SALT, signer_kwargs={"digest_method": hashlib.sha256})


def make_token(secret: str, session: Session) -> str:
    token = _serializer(secret).dumps({"k": session.key_id, "e": round(session.expires_at, 3)})
    return str(token)


def read_token(secret: str, token: str) -> Session | None:
    """The session `token` stands for, None when its signature does not hold."""
    try:
        payload = _serializer(secret).loads(token)
    except BadSignature:
        return None
    if not isinstance(payload, dict):
        return None
    key_id, expires = payload.get("k"), payload.get("e")
    if not isinstance(key_id, str) or not isinstance(expires, int | float):
        return None
    return Session(key_id, float(expires))


def session_caller(request: Request[Any, Any, Any], gateway: Gateway) -> Caller | None:
    """The admin the request's session cookie names: None without one, or with one that is
    tampered with, expired, or for a key that is not (or no longer) an admin's."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    session = read_token(session_secret(request, gateway), token)
    if session is None or session.expires_at <= gateway.clock():
        return None
    caller = gateway.keys.by_key_id(session.key_id)
    return caller if caller is not None and caller.admin else None


def check(request: Request[Any, Any, Any], gateway: Gateway) -> Caller:
    """The caller allowed to see the status, else the `ApiError` to answer: 404 when the
    page is off, 401 without a valid key or session, 403 for a key that is not an admin's.
    A bearer header, when sent, decides alone; else the session cookie."""
    if not enabled(gateway):
        raise not_found()
    if gateway.open_access:
        return ANONYMOUS
    if request.headers.get("authorization"):
        return require_admin(request, gateway)
    caller = session_caller(request, gateway)
    if caller is not None:
        return caller
    if request.cookies.get(COOKIE):
        raise ApiError(
            "The status page session is not valid (expired, or its key is no longer an "
            "admin's): log in again at /status.",
            status=401,
            code="invalid_session",
        )
    return require_admin(request, gateway)  # no key at all: OpenAI's 401


def authorized(request: Request[Any, Any, Any], gateway: Gateway) -> Caller | None:
    """The caller when allowed to see the status, None when not (the page shows its login
    form then). A disabled page is nobody's: check `enabled` first to answer 404."""
    try:
        return check(request, gateway)
    except ApiError:
        return None


def cookie_header(
    request: Request[Any, Any, Any], gateway: Gateway, value: str, max_age: int
) -> str:
    """A `Set-Cookie` value for the session (an empty value and 0 to clear it); `Secure`
    over https, or always with `status_page.secure_cookie` (TLS ended by a proxy)."""
    parts = [
        f"{COOKIE}={value}",
        "HttpOnly",
        "SameSite=Strict",
        f"Path={COOKIE_PATH}",
        f"Max-Age={max_age}",
    ]
    if request.url.scheme == "https" or gateway.config.status_page.secure_cookie:
        parts.append("Secure")
    return "; ".join(parts)
