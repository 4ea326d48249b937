"""v2 webhooks: a signed POST of the job's result body when it completes or fails.

Calls leave from one background thread with its own event loop, so a slow or dead receiver never
holds a worker; each call is retried with exponential backoff. The receiver's address passes the
same SSRF guard as media URLs (``server.media``), checked when the job is submitted and again for
every call (DNS may have changed since), and the call connects to the checked address.

Signature (the scheme Stripe and Svix use): ``X-Facefoundry-Signature: t=<unix time>,v1=<hex>``
where ``<hex>`` is HMAC-SHA256 of ``"<t>.<body>"`` under ``webhook_secret``; a receiver recomputes
it and rejects old timestamps to stop replays. Deliveries still pending at shutdown are dropped
(logged); the job's result stays available by polling.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time

import httpx

from server.errors import ApiError
from server.media import parsed_url, pinned_address
from server.metrics import Metrics
from server.settings import Settings

log = logging.getLogger("facefoundry.webhooks")

SIGNATURE_HEADER = "X-Facefoundry-Signature"
FIELD = "webhook"
# 1 s, 2 s, 4 s, ... between attempts.
FIRST_RETRY_S = 1.0


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


async def check_webhook_url(url: str, settings: Settings) -> None:
    """Refuse (400) a webhook the server cannot call: no secret to sign with, or an address the
    SSRF guard forbids."""
    if not settings.webhook_secret:
        raise ApiError(400, "webhook: this server has no webhook secret (FACEFOUNDRY_WEBHOOK_SECRET); "
                            "poll the status URL instead")
    await pinned_address(parsed_url(url, FIELD), settings, FIELD, url)


class WebhookSender:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pending: set[asyncio.Task] = set()
        self._started = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="webhooks", daemon=True)
        self._thread.start()
        self._started.wait(5)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.call_soon(self._started.set)
        self._loop.run_forever()
        self._loop.close()

    def send(self, url: str, body: dict, event: str, request_id: str) -> None:
        """Queue a call; returns at once."""
        if self._loop is None:
            return
        payload = json.dumps({"event": event, **body}).encode()
        self._loop.call_soon_threadsafe(self._spawn, url, payload, event, request_id)

    def _spawn(self, url: str, payload: bytes, event: str, request_id: str) -> None:
        task = asyncio.ensure_future(self._deliver(url, payload, event, request_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _deliver(self, url: str, payload: bytes, event: str, request_id: str) -> None:
        attempts = self.settings.webhook_max_attempts
        for attempt in range(1, attempts + 1):
            try:
                status = await self._post(url, payload, event, request_id)
                if 200 <= status < 300:
                    self.metrics.webhooks.labels("delivered").inc()
                    return
                problem = f"HTTP {status}"
            except ApiError as exc:  # the guard refused the address: retrying cannot help
                log.warning("webhook %s for %s refused: %s", url, request_id, exc.message)
                self.metrics.webhooks.labels("refused").inc()
                return
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            if attempt < attempts:
                self.metrics.webhooks.labels("retried").inc()
                await asyncio.sleep(FIRST_RETRY_S * 2 ** (attempt - 1))
        log.warning("webhook %s for %s failed after %d attempts (%s)", url, request_id, attempts, problem)
        self.metrics.webhooks.labels("failed").inc()

    async def _post(self, url: str, payload: bytes, event: str, request_id: str) -> int:
        target = parsed_url(url, FIELD)
        address = await pinned_address(target, self.settings, FIELD, url)
        headers = {"Host": target.authority, "Content-Type": "application/json", "X-Request-ID": request_id,
                   "X-Facefoundry-Event": event,
                   SIGNATURE_HEADER: signature(self.settings.webhook_secret, int(time.time()), payload)}
        timeout = httpx.Timeout(self.settings.webhook_timeout_s)
        # trust_env=False and no redirects: the call goes to the checked address and nowhere else.
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            response = await client.post(target.at(address), content=payload, headers=headers,
                                         extensions={"sni_hostname": target.host})
        return response.status_code

    def stop(self, timeout: float) -> None:
        if self._loop is None:
            return
        deadline = time.time() + timeout
        while self._pending and time.time() < deadline:
            time.sleep(0.05)
        if self._pending:
            log.warning("dropping %d webhook calls still pending at shutdown", len(self._pending))
        self._loop.call_soon_threadsafe(self._cancel_all)
        if self._thread is not None:
            self._thread.join(2)

    def _cancel_all(self) -> None:
        for task in list(self._pending):
            task.cancel()
        self._loop.stop()
