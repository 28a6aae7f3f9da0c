"""The status page's routes: `GET /status.json` (the snapshot, router/status/data.py),
`POST /status/login` and `POST /status/logout` (the session cookie, router/status/access.py).

`ROUTES` is the list router/app.py registers: the page's own handlers (`GET /status`, its
static files: router/status/page.py) are appended to it here, so the app has one place to
take the status page's routes from. For the page: `app_snapshot(request)` is the same
dict `/status.json` serves; `access.enabled(gateway)` (False: answer 404),
`access.authorized(request, gateway)` (None: show the login form) and `access.check`
(raises the 401/403 `ApiError`) say who may see it. In the snapshot, limit `kind`s are
`rpm`, `tpm`, `budget_tokens`, `budget_usd` (amounts in dollars) and `concurrency`; each
deployment carries its own `history`; keys outside teams are under `keys`.

Login takes the admin key from a POST form (`key=...`, as the page's form sends it),
never a URL, and never writes it anywhere: the log names the key by its id. A browser
(`Accept: text/html`) that gives a wrong key gets the login form again with a 401 (403 for
a key that is not an admin's); a script gets OpenAI's error envelope."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import orjson
import structlog
from litestar import Request, Response, get, post
from litestar.types import HTTPReceiveMessage

from policies.errors import ApiError
from router.errors import from_api_error
from router.gateway import Gateway
from router.status import access, page
from router.status.data import snapshot
from router.status.document import login_document

log = structlog.get_logger("turnout.status")

MAX_FORM_BYTES = 4096  # a key, and room to spare
NO_STORE = {"cache-control": "no-store"}


async def app_snapshot(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The snapshot of the app serving `request` (its gateway, batch storage, reloads)."""
    state = request.app.state
    reloader = state.get("reloader")
    return await snapshot(
        state.gateway,
        storage=state.get("storage"),
        reloads=reloader.history if reloader is not None else None,
    )


@get("/status.json", status_code=200)
async def status_json(request: Request[Any, Any, Any]) -> Response[Any]:
    gateway: Gateway = request.app.state.gateway
    try:
        access.check(request, gateway)
    except ApiError as exc:
        return from_api_error(exc)
    answer = await app_snapshot(request)
    return Response(orjson.dumps(answer), media_type="application/json", headers=NO_STORE)


@post("/status/login", status_code=303)
async def login(request: Request[Any, Any, Any]) -> Response[Any]:
    gateway: Gateway = request.app.state.gateway
    html = wants_html(request)
    try:
        if not access.enabled(gateway):
            raise access.not_found()
        _same_origin(request)
        if gateway.open_access:  # nothing to log in to
            return _see_status()
        key = (await _form(request)).get("key", "").strip()
        caller = gateway.keys.lookup(key) if key else None
        if caller is None:
            log.info("status_login_refused", reason="unknown key")
            raise ApiError("Incorrect admin key.", status=401, code="invalid_api_key")
        if not caller.admin:
            log.info("status_login_refused", reason="not an admin key", key_id=caller.key_id)
            raise ApiError(
                "This key is not an admin's: the status page needs an admin key.",
                status=403,
                type="permission_error",
                code="admin_required",
            )
    except ApiError as exc:
        return _login_refused(exc, html)
    ttl = gateway.config.status_page.session_ttl_s
    session = access.Session(caller.key_id, gateway.clock() + ttl)
    token = access.make_token(access.session_secret(request, gateway), session)
    log.info("status_login", key_id=caller.key_id)
    return _see_status(access.cookie_header(request, gateway, token, int(ttl)))


@post("/status/logout", status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    gateway: Gateway = request.app.state.gateway
    try:
        if not access.enabled(gateway):
            raise access.not_found()
        _same_origin(request)
    except ApiError as exc:
        return from_api_error(exc)
    return _see_status(access.cookie_header(request, gateway, "", 0))


def wants_html(request: Request[Any, Any, Any]) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _see_status(cookie: str | None = None) -> Response[Any]:
    headers = {"location": "/status", **NO_STORE}
    if cookie is not None:
        headers["set-cookie"] = cookie
    return Response(b"", status_code=303, headers=headers)


def _login_refused(exc: ApiError, html: bool) -> Response[Any]:
    if not html or exc.status not in (401, 403):
        return from_api_error(exc)
    return Response(
        login_document(exc.message),
        status_code=exc.status,
        media_type="text/html",
        headers=page.PAGE_HEADERS,  # the page's CSP, nosniff, no-referrer and no-store
    )


def _same_origin(request: Request[Any, Any, Any]) -> None:
    """A form posted from another site's page is refused (login and logout change the
    browser's session): browsers send `Origin` with every POST; scripts need not."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return
    if urlsplit(origin).netloc != request.headers.get("host", ""):
        raise ApiError("Cross-origin form posts are refused.", status=403, code="bad_origin")


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The urlencoded form, read to at most `MAX_FORM_BYTES` (413 past it)."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise ApiError(
            "Log in with a form: Content-Type application/x-www-form-urlencoded, field `key`.",
            status=415,
            code="unsupported_media_type",
        )
    parts: list[bytes] = []
    size, more = 0, True
    while more:
        message = cast("HTTPReceiveMessage", await request.receive())
        if message["type"] == "http.disconnect":
            raise ApiError("The client closed the request.", status=499)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_FORM_BYTES:
            raise ApiError("The login form is too large.", status=413, code="too_large")
        parts.append(chunk)
        more = message.get("more_body", False)
    try:
        fields = parse_qs(b"".join(parts).decode("utf-8", "replace"), max_num_fields=8)
    except ValueError:  # more fields than a login form has
        raise ApiError("The login form has too many fields.", code="invalid_form") from None
    return {name: values[0] for name, values in fields.items() if values}


ROUTES: list[Any] = [status_json, login, logout, *page.ROUTES]
