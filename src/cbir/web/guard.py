"""Who may ask what: the Host allow-list (no DNS rebinding) and permission to write.

A web page on another site can point its own domain name at 127.0.0.1 ("DNS rebinding") and
then read this server as if it were its own origin. Its requests still carry its own name in
the Host header, so only the names this server is known by are answered: the address it is
bound to, the loopback names, and names given with --allowed-host (CBIR_ALLOWED_HOSTS). Every
other Host is refused before any work is done.

Writes (adding and deleting images) are off unless asked for (--allow-writes, or a token in
CBIR_WRITE_TOKEN). With a token, every write carries `Authorization: Bearer <token>`; a server
reachable beyond this machine refuses to start with writes on and no token.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from flask import Response, current_app, jsonify, request
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, Unauthorized

from cbir.errors import CbirError

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
WRITE_TOKEN_ENV = "CBIR_WRITE_TOKEN"
ALLOWED_HOSTS_ENV = "CBIR_ALLOWED_HOSTS"
CONFIG_KEY = "CBIR_WRITES"


@dataclass(frozen=True)
class WritePolicy:
    enabled: bool = False
    token: str | None = None

    @classmethod
    def decide(cls, bound_host: str, allow_writes: bool, token: str | None) -> WritePolicy:
        """Writes on when asked for or when a token is set; a CbirError when the server would
        take writes from beyond this machine without a token."""
        enabled = allow_writes or bool(token)
        if enabled and not token and not is_loopback(bound_host):
            raise CbirError(
                f"--host {bound_host} is reachable beyond this machine, so writes need a "
                f"token: set {WRITE_TOKEN_ENV}, or leave out --allow-writes"
            )
        return cls(enabled=enabled, token=token or None)


def host_name(value: str) -> str:
    """The name part of a Host header or address, lower case, no port, IPv6 in brackets."""
    value = value.strip().lower().rstrip(".")
    if value.startswith("["):
        return value.split("]", 1)[0] + "]"
    if value.count(":") > 1:  # a bare IPv6 address, as --host takes it
        return f"[{value}]"
    return value.split(":", 1)[0].rstrip(".")


def is_loopback(host: str) -> bool:
    name = host_name(host)
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bound_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    names = {host_name(bound_host), *(host_name(name) for name in extra if name.strip())}
    return frozenset(LOOPBACK_NAMES | names)


def host_check(allowed: frozenset[str]):
    """A before-request hook that answers 421 to a Host not in `allowed`."""

    def check() -> Response | None:
        raw = request.environ.get("HTTP_HOST")
        if raw is None or host_name(raw) in allowed:  # browsers always send a Host
            return None
        response = jsonify(
            {
                "error": f"this server does not answer to the host {raw[:80]!r}; start "
                "`cbir serve` with --allowed-host NAME to add a name it is reached by",
                "status": 421,
            }
        )
        response.status_code = 421
        return response

    return check


def check_write_access() -> None:
    """403 when writes are off or come from another site's page, 401 without the token."""
    policy: WritePolicy = current_app.config[CONFIG_KEY]
    if not policy.enabled:
        raise Forbidden(
            "writes are off on this server: start `cbir serve` with --allow-writes "
            f"(or set {WRITE_TOKEN_ENV})"
        )
    if policy.token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.encode(), policy.token.encode()
        ):
            raise Unauthorized(
                f"writes need the header `Authorization: Bearer <{WRITE_TOKEN_ENV}>`",
                www_authenticate=WWWAuthenticate("bearer"),
            )
    # A cross-site form could otherwise add or delete images.
    origin = request.headers.get("Origin")
    if origin and origin.rstrip("/") != request.host_url.rstrip("/"):
        raise Forbidden(f"writes from pages of another site ({origin[:80]}) are refused")
