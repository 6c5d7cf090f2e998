"""Webhook deliveries: when a run completes, POST it to its runner's `webhook_url`
as `{"run": Run, "runner_id": …, "will_retry": …}` (whether a retry of it is queued).

The store marks a completed run's webhook `pending` in the same commit that
completes it, so a delivery survives a restart. This module's loop picks
pending deliveries, signs each body with HMAC-SHA256 (`X-Runnerd-Signature:
sha256=<hex>`, keyed by `[webhooks] secret`), and retries with backoff until the
receiver answers 2xx (`delivered`) or `max_retry_seconds` after completion have
passed (`failed`). It runs beside the scheduler and never holds it up.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from datetime import tzinfo
from urllib.parse import urlsplit

import aiohttp

from . import __version__
from .config import WebhooksConfig
from .contract import run_json
from .models import Run
from .retry import is_store_fault, retry_store
from .store import RunStore

log = logging.getLogger("runnerd.webhooks")

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
MAX_IN_FLIGHT = 16


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    def __init__(self, store: RunStore, config: WebhooksConfig, tz: tzinfo) -> None:
        self.store = store
        self.config = config
        self.tz = tz
        self._wakeup = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._loop_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def run_completed(self, run: Run) -> None:
        """Store listener: a run with a webhook completed."""
        if run.webhook_url is not None:
            self._wakeup.set()

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The delivery loop's task, for the daemon to supervise."""
        return self._loop_task

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_seconds),
            headers={"User-Agent": f"runnerd/{__version__}"},
        )
        self._loop_task = asyncio.create_task(self._loop(), name="runnerd-webhooks")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, *self._in_flight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _loop(self) -> None:
        # Survives every error: back-off and a warning each time (a traceback
        # when it is not the database failing); deliveries wait in the store.
        delay = BACKOFF_FIRST
        while True:
            try:
                self._wakeup.clear()
                room = MAX_IN_FLIGHT - len(self._in_flight)
                runs = (
                    await self.store.pending_webhooks(room, list(self._in_flight))
                    if room > 0
                    else []
                )
                for run in runs:
                    self._in_flight[run.id] = asyncio.create_task(self._deliver(run))
                delay = BACKOFF_FIRST
                await self._wakeup.wait()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning(
                    "webhooks: cannot read the deliveries to make: %s; retrying in %.0f s",
                    str(e) or type(e).__name__,
                    delay,
                    exc_info=not is_store_fault(e),
                )
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)

    async def _deliver(self, run: Run) -> None:
        # A delivery's outcome is recorded however long the database takes: a
        # delivered webhook recorded `failed` (or left pending, sent again) is wrong.
        try:
            try:
                status = await self._attempts(run)
            except asyncio.CancelledError:
                raise  # stays pending: delivered after the next start
            except Exception:
                log.exception("run %s: webhook delivery failed unexpectedly", run.id)
                status = "failed"
            await retry_store(
                f"run {run.id}: recording its webhook {status}",
                lambda: self.store.set_webhook_status(run.id, status),
                log,
            )
        except asyncio.CancelledError:
            raise
        except Exception:  # the database is damaged: it stays pending, for the next start
            log.exception("run %s: cannot record its webhook delivery", run.id)
        finally:
            self._in_flight.pop(run.id, None)
            self._wakeup.set()

    async def _attempts(self, run: Run) -> str:
        assert self._session is not None and run.webhook_url is not None
        secret = self.config.secret
        if secret is None:
            log.warning("run %s: webhook not sent: no [webhooks] secret configured", run.id)
            return "failed"
        # Checked again here: the URL was allowed when it was set, under the config
        # of that time; the one in force now decides.
        host = urlsplit(run.webhook_url).hostname or ""
        if not self.config.allows(host):
            log.warning(
                "run %s: webhook not sent: its host %r is not in [webhooks] allowed_hosts",
                run.id,
                host,
            )
            return "failed"
        body = json.dumps(
            {
                "run": run_json(run, self.tz),
                "runner_id": run.runner_id,
                "will_retry": run.will_retry,
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Runnerd-Signature": signature(secret, body),
            "X-Runnerd-Delivery": run.id,
        }
        give_up_at = (run.completed_at or 0) / 1000 + self.config.max_retry_seconds
        delay = BACKOFF_FIRST
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._session.post(
                    run.webhook_url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    if 200 <= response.status < 300:
                        log.info("run %s: webhook delivered (attempt %d)", run.id, attempt)
                        return "delivered"
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, OSError) as e:
                problem = (
                    type(e).__name__ if isinstance(e, TimeoutError) else str(e) or type(e).__name__
                )
            if time.time() + delay > give_up_at:
                log.warning(
                    "run %s: webhook failed after %d attempts (last: %s); giving up",
                    run.id,
                    attempt,
                    problem,
                )
                return "failed"
            log.info(
                "run %s: webhook attempt %d failed (%s); retrying in %.0f s",
                run.id,
                attempt,
                problem,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(BACKOFF_MAX, delay * 2)
