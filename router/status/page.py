"""`GET /status`: the operator's status page, rendered on the server from the snapshot
`/status.json` serves (the first paint has the data), and the page's own CSS and script
(`GET /status/static/{name}`, package data in router/status/static/: no CDN, no build step).

A browser without a valid session (keys configured, no admin bearer key, no session
cookie) gets the login form instead, answered 401. Both documents go out with a
Content-Security-Policy that allows nothing but Turnout's own files (no inline script or
style, no framing, forms posted only back here) and are never cached: they show the state
of a gateway and, for a logged-in admin, what its teams spend."""

from __future__ import annotations

from importlib import resources
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import FromPath

from policies.errors import ApiError
from router.gateway import Gateway
from router.status import access
from router.status.data import snapshot
from router.status.document import login_document, status_document

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# The only files served from static/: a fixed list, so no path from a URL reaches the disk.
STATIC_FILES = {
    "status.css": "text/css; charset=utf-8",
    "status.js": "text/javascript; charset=utf-8",
}


def html_answer(document: str, status: int = 200) -> Response[str]:
    return Response(document, status_code=status, media_type="text/html", headers=PAGE_HEADERS)


@get("/status", include_in_schema=False)
async def status_page(request: Request[Any, Any, Any], state: State) -> Response[str]:
    """The page for an admin (or anyone, with open access); the login form otherwise, with
    the refusal's status (401, or 403 for a key that is not an admin's)."""
    gateway: Gateway = state.gateway
    if not access.enabled(gateway):
        raise access.not_found()
    try:
        access.check(request, gateway)
    except ApiError as refusal:
        return login_answer(refusal)
    reloader = state.get("reloader")
    found = await snapshot(
        gateway,
        storage=state.get("storage"),
        reloads=reloader.history if reloader is not None else None,
    )
    # A log-out button only where a session cookie let the browser in: a bearer key or
    # open access has nothing to forget.
    in_session = not gateway.open_access and not request.headers.get("authorization")
    return html_answer(status_document(found, can_log_out=in_session))


def login_answer(refusal: ApiError) -> Response[str]:
    """The login form, saying why where it is not simply the first visit."""
    message = {
        "invalid_session": "Your session has ended: log in again.",
        "admin_required": "That key is not an admin's.",
        "invalid_api_key": "That key is not valid.",
    }.get(refusal.code or "")
    return html_answer(login_document(message), refusal.status)


@get("/status/static/{name:str}", sync_to_thread=False, include_in_schema=False)
def status_static(name: FromPath[str], state: State) -> Response[bytes]:
    """Served to anyone (the login form needs the CSS): nothing in them is secret."""
    media_type = STATIC_FILES.get(name)
    if media_type is None or not access.enabled(state.gateway):
        raise access.not_found()
    body = resources.files("router.status").joinpath("static", name).read_bytes()
    return Response(
        body,
        media_type=media_type,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


ROUTES: list[Any] = [status_page, status_static]  # router/status/routes.py appends them
