"""One HTTP exchange with Clowder's v1 API, with its failures sorted into transient and permanent.

The API key travels only in the ``X-API-Key`` header, never in a URL: URLs end up in exception
messages and in urllib3's debug log lines (``"POST /api/...?key=..." 200``), which is why the
pyclowder 3 helpers, which all put ``?key=`` in the URL, are not used for requests. Every message
that leaves this module is scrubbed of the key anyway. Redirects are refused rather than followed,
because requests would resend the custom key header to whatever host a redirect names.

Nothing here retries: the caller retries whole check-then-act steps, so a request that succeeded
at Clowder but whose answer was lost is found by the next check instead of being repeated.

A circuit breaker watches every answer: while most recent requests fail (5xx, resets, timeouts),
requests are not sent but refused at once with :class:`CatalogUnavailable`, and one trial request
goes now and then; its success lets everything through again. So a Clowder in trouble gets one
request per open period instead of one per waiting file. Any answer, a refusal included, counts
as Clowder being there.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import requests

from consumers.catalog.base import (
    CatalogPermanentError,
    CatalogTransientError,
    CatalogUnavailable,
)
from terra_xfer import metrics
from terra_xfer.circuit_breaker import CLOSED, OPEN, STATE_VALUES, CircuitBreaker

log = logging.getLogger(__name__)

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
_KEY_PARAM = re.compile(r"([?&](?:key|apikey|api_key)=)[^&\s'\"]+", re.IGNORECASE)
_REASON_CHARS = 500
_BAD_URL = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
)


class ClowderHttp:
    """A requests session bound to one Clowder and one API key."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.breaker = breaker or CircuitBreaker(window=40, min_calls=20, failure_ratio=0.5)
        self._circuit = CLOSED
        self._key = key
        self._timeout = (connect_timeout_s, timeout_s)
        self._session = requests.Session()
        self._session.headers["X-API-Key"] = key
        self._session.headers["Accept"] = "application/json"

    def __repr__(self) -> str:
        return f"ClowderHttp({self.url!r})"

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return self._json("GET", path, self.request("GET", path, params=params))

    def post_json(self, path: str, body: Any) -> Any:
        response = self.request("POST", path, json=body)
        return self._json("POST", path, response)

    def post_multipart(self, path: str, data: Any, content_type: str) -> Any:
        response = self.request("POST", path, data=data, headers={"Content-Type": content_type})
        return self._json("POST", path, response)

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send once; a 2xx answer is returned, anything else raised as a catalog error. While
        the circuit breaker holds requests back, :class:`CatalogUnavailable` without sending."""
        self._admit(method, path)
        url = f"{self.url}/api/{path}"
        try:
            response = self._session.request(
                method, url, timeout=self._timeout, allow_redirects=False, **kwargs
            )
            response.content  # noqa: B018 - read the whole body here: a cut-short one is transient
        except _BAD_URL as exc:
            raise CatalogPermanentError(self._where(method, path, self.scrub(str(exc)))) from None
        except requests.RequestException as exc:
            # connection refused or reset, timeouts, a body cut short
            self._answered(False)
            raise CatalogTransientError(self._where(method, path, self.scrub(str(exc)))) from None
        status = response.status_code
        self._answered(status not in TRANSIENT_STATUSES)
        if 200 <= status < 300:
            return response
        reason = f"{status} {self._reason(response)}"
        if status in TRANSIENT_STATUSES:
            raise CatalogTransientError(self._where(method, path, reason))
        if 300 <= status < 400:
            target = self.scrub(response.headers.get("Location", "?"))
            reason = f"{status} redirected to {target}; configure the final Clowder URL"
        raise CatalogPermanentError(self._where(method, path, reason), status)

    def close(self) -> None:
        self._session.close()

    def _admit(self, method: str, path: str) -> None:
        """Let a request go, or refuse it at once while the breaker is open."""
        if self.breaker.allow():
            return
        metrics.CATALOG_CIRCUIT.labels("clowder").set(STATE_VALUES[self.breaker.state])
        wait = self.breaker.wait_s()
        why = f"not sent, most recent requests failed; next trial in {wait:.1f} s"
        raise CatalogUnavailable(self._where(method, path, why), retry_after=wait)

    def _answered(self, ok: bool) -> None:
        """Tell the breaker; a change of state to the log and the gauge."""
        self.breaker.record(ok)
        state = self.breaker.state
        metrics.CATALOG_CIRCUIT.labels("clowder").set(STATE_VALUES[state])
        if state == OPEN and self._circuit == CLOSED:
            log.warning(
                "clowder %s keeps failing; one trial request every %.0f s or more until one succeeds",
                self.url, self.breaker.wait_s(),
            )  # fmt: skip
        elif state == CLOSED and self._circuit != CLOSED:
            log.info("clowder %s answers again", self.url)
        self._circuit = state

    def scrub(self, text: str) -> str:
        """``text`` with the API key and any ``key=`` URL parameter masked."""
        if self._key:
            text = text.replace(self._key, "***")
        return _KEY_PARAM.sub(r"\1***", text)

    def _reason(self, response: requests.Response) -> str:
        """What Clowder said: its body (a JSON string or object), else the HTTP reason phrase."""
        text = response.text.strip()
        try:
            decoded = json.loads(text) if text else None
        except ValueError:
            decoded = None
        if isinstance(decoded, str):
            text = decoded
        elif isinstance(decoded, Mapping):
            text = str(decoded.get("message") or decoded.get("status") or text)
        text = " ".join(text.split())[:_REASON_CHARS]
        return self.scrub(text or response.reason or "no reason given")

    def _json(self, method: str, path: str, response: requests.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            snippet = self.scrub(response.text.strip()[:200])
            raise CatalogPermanentError(
                self._where(method, path, f"answer is not JSON: {snippet!r}"), response.status_code
            ) from None

    @staticmethod
    def _where(method: str, path: str, what: str) -> str:
        return f"clowder {method} /api/{path.split('?')[0]}: {what}"


def objects_with_ids(answer: Any, what: str) -> list[Mapping[str, Any]]:
    """A JSON list of objects with ids, or a permanent error naming what Clowder sent instead."""
    if isinstance(answer, list) and all(isinstance(e, Mapping) and "id" in e for e in answer):
        return answer
    raise CatalogPermanentError(f"clowder {what} answered {str(answer)[:200]!r}")


def segment(value: str) -> str:
    """An id made safe to put in a URL path."""
    return quote(value, safe="")
