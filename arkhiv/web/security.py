"""Small guards for the signed-in web pages: rate limits, CSRF checks and the session cookie's
name and attributes."""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Literal

from starlette.requests import Request

SESSION_COOKIE = "arkhiv_session"
# Browsers accept a __Host- cookie only with Secure, Path=/ and no Domain, so no other site
# under the same domain (nor plain http) can set or shadow it.
SECURE_SESSION_COOKIE = "__Host-" + SESSION_COOKIE


class RateLimiter:
    """At most `limit` hits per key in any window of `per_seconds` (a sliding window).

    Per process: each server process counts on its own, so with N processes a client gets up to
    N times the limit. Memory stays bounded: keys idle for a whole window are dropped, and past
    `max_keys` the least recently hit keys are forgotten (which only forgives them early)."""

    def __init__(
        self,
        limit: int,
        per_seconds: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or per_seconds <= 0 or max_keys < 1:
            raise ValueError("a rate limit needs limit >= 1, per_seconds > 0 and max_keys >= 1")
        self.limit = limit
        self.per_seconds = per_seconds
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        # key -> times of its recent allowed hits; ordered from least to most recently hit.
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, key: str) -> float:
        """Count one attempt: 0 when it is allowed, else the seconds until one will be. Refused
        attempts are not counted, so a client that waits gets through."""
        with self._lock:
            at = self._clock()
            window_start = at - self.per_seconds
            self._forget_idle_keys(window_start)
            times = self._hits.get(key)
            if times is None:
                times = self._hits[key] = deque()
            else:
                self._hits.move_to_end(key)
            while times and times[0] <= window_start:
                times.popleft()
            if len(times) >= self.limit:
                return max(times[0] - window_start, 1e-6)
            times.append(at)
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
            return 0.0

    def retry_after(self, key: str) -> float:
        """Like `hit` without counting: 0 when a hit would be allowed now, else the seconds to
        wait. For limits on failures, counted with `hit` only when an attempt fails."""
        with self._lock:
            window_start = self._clock() - self.per_seconds
            times = self._hits.get(key)
            recent = [at for at in times or () if at > window_start]
            if len(recent) < self.limit:
                return 0.0
            return max(recent[0] - window_start, 1e-6)

    def __len__(self) -> int:
        """How many keys are remembered."""
        return len(self._hits)

    def _forget_idle_keys(self, window_start: float) -> None:
        # Keys are in order of their last hit, so the idle ones are all at the front.
        while self._hits:
            key, times = next(iter(self._hits.items()))
            if times and times[-1] > window_start:
                return
            del self._hits[key]


def csrf_matches(expected: str, given: str | None) -> bool:
    """Whether a form's CSRF token is the session's, compared in constant time."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def cookie_name(secure: bool) -> str:
    return SECURE_SESSION_COOKIE if secure else SESSION_COOKIE


def cookie_options(secure: bool) -> dict[str, Any]:
    """Attributes for the session cookie (Starlette's `set_cookie`/`delete_cookie` keywords):
    out of reach of scripts, not sent on cross-site posts."""
    return {"httponly": True, "samesite": "lax", "secure": secure, "path": "/"}


def cookies_secure(request: Request, setting: Literal["auto", "always", "never"]) -> bool:
    """Whether the session cookie must be Secure, per `web.secure_cookies`: under "auto", when
    the request came over https (behind a proxy, uvicorn takes the scheme from X-Forwarded-Proto
    when the proxy's address is trusted: see `client_key`)."""
    if setting == "auto":
        return request.url.scheme == "https"
    return setting == "always"


def client_key(request: Request) -> str:
    """The client's address, to rate-limit by. Behind a reverse proxy every request comes from the
    proxy, unless uvicorn trusts its X-Forwarded-For: it does from 127.0.0.1, and from the
    addresses in the environment variable FORWARDED_ALLOW_IPS."""
    return request.client.host if request.client else "unknown"
