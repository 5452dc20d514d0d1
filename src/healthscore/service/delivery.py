"""The service's alert delivery: a thread that sends the outbox's due deliveries.

`healthscore alerts deliver` sends them once, and while `healthscore serve` runs,
`AlertDeliveryDuty` does the same every `alerts.delivery.service_interval` seconds.
In both, a channel that cannot be built, such as one whose settings name an unset
environment variable, stops only its own deliveries. `alerts deliver` records a
failed attempt for each of them. The service leaves them due without an attempt,
because its rounds repeat every `service_interval` seconds and would use up the
attempts of a channel that stays unset until someone fixes it.
"""

from __future__ import annotations

import logging
import threading

from healthscore.config import Project
from healthscore.monitoring.channels import UnavailableChannel, build_channels
from healthscore.monitoring.outbox import (
    LEASE_SECONDS,
    Channel,
    Delivery,
    DeliveryReport,
    deliver_pending,
    release_claim,
    utc_now,
)
from healthscore.store.state import StateStore

__all__ = ["AlertDeliveryDuty", "DeliveryStoppedError"]

# The service's own log name, whose level `service_log_levels` sets.
logger = logging.getLogger("healthscore.service")


class DeliveryStoppedError(Exception):
    """The service began to stop while a delivery round still had deliveries to send.

    Raised by a channel instead of sending, so that `deliver_pending` stops without
    recording an attempt. The round then releases the delivery's claim, so that
    another process or the service's next start sends it without waiting for the
    claim to expire.
    """

    def __init__(self, delivery: Delivery) -> None:
        super().__init__(f"delivery {delivery.id} of alert {delivery.alert_id}")
        self.delivery = delivery


class _StoppableChannel:
    """A channel that sends nothing once `stopping` is set."""

    def __init__(self, channel: Channel, stopping: threading.Event) -> None:
        self.channel = channel
        self.stopping = stopping

    def send(self, delivery: Delivery) -> str | None:
        if self.stopping.is_set():
            raise DeliveryStoppedError(delivery)
        return self.channel.send(delivery)


class AlertDeliveryDuty:
    """Send the outbox's due alert deliveries every `service_interval` seconds.

    A thread runs one round, as `healthscore alerts deliver` does, one interval after
    the start and then one interval after the previous round ended. Each request
    process of `serve --workers N` runs its own thread. The outbox claims every
    delivery with a conditional UPDATE before sending it, so only one process sends it.

    `stop` returns at once between rounds. During a round it waits for the send in
    progress, which the channel's timeout bounds, and the round sends nothing more.
    The round releases its claim of the delivery it would have sent next, which is
    the only claim it holds then.

    The thread uses the app's StateStore: its SQLAlchemy engine hands each caller its
    own pooled connection, as it does for the request threads.
    """

    def __init__(self, project: Project, state: StateStore) -> None:
        self.project = project
        self.state = state
        self.interval = project.config.alerts.delivery.service_interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error: str | None = None
        self._failed_rounds = 0
        # Reason by name of each channel that the last round could not build.
        self._unavailable: dict[str, str] = {}

    def start(self) -> None:
        if self.interval == 0:
            logger.info(
                "alert delivery in the service is off (alerts.delivery."
                "service_interval is 0); send alerts with `healthscore alerts deliver`"
            )
            return
        self._thread = threading.Thread(
            target=self._run, name="healthscore-alert-delivery", daemon=True
        )
        self._thread.start()
        logger.info("alert delivery started: every %g s", self.interval)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is None:
            return
        self._thread.join()
        self._thread = None
        logger.info("alert delivery stopped")

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self.deliver_once()

    def deliver_once(self) -> DeliveryReport | None:
        """Send the deliveries due now; return None when the round failed or stopped.

        A failure is logged and not raised, so the thread goes on with the next round.
        The deliveries to a channel that cannot be built stay due, without an
        attempt, and the other channels deliver theirs.
        """
        settings = self.project.config.alerts
        now = utc_now()
        try:
            built = build_channels(settings, strict=False, warn=False)
            unavailable = {
                name: channel.reason
                for name, channel in built.items()
                if isinstance(channel, UnavailableChannel)
            }
            self._log_unavailable(unavailable)
            channels = {
                name: _StoppableChannel(channel, self._stopping)
                for name, channel in built.items()
                if name not in unavailable
            }
            report = deliver_pending(
                self.state,
                channels,
                now,
                settings.delivery,
                paused=unavailable,
                clock=utc_now,
            )
        except DeliveryStoppedError as stopped:
            self._release(stopped.delivery)
            return None
        except Exception as exc:  # a failed round must not end the thread
            self._log_failure(exc)
            return None
        if self._failed_rounds:
            logger.info(
                "alert delivery works again after %d failed round(s)",
                self._failed_rounds,
            )
            self._failed_rounds = 0
            self._last_error = None
        _log_report(report)
        return report

    def _log_unavailable(self, unavailable: dict[str, str]) -> None:
        """Log each channel that became unavailable or available again."""
        for name, reason in unavailable.items():
            if self._unavailable.get(name) != reason:
                logger.warning(
                    "alert channel %s is unavailable, so its deliveries wait without "
                    "spending attempts until it is fixed: %s",
                    name,
                    reason,
                )
        for name in self._unavailable.keys() - unavailable.keys():
            logger.info("alert channel %s is available again", name)
        self._unavailable = unavailable

    def _release(self, delivery: Delivery) -> None:
        """Release the claim of a delivery that the stopped round did not send."""
        try:
            released = release_claim(self.state, delivery)
        except Exception as exc:  # the stop must go on even if the store fails
            logger.error(
                "alert delivery stopped during a round, and releasing the claim of "
                "delivery %d of alert %d failed (%s: %s), so it is due again when the "
                "claim expires, %d s after it was claimed",
                delivery.id,
                delivery.alert_id,
                type(exc).__name__,
                exc,
                LEASE_SECONDS,
            )
            return
        if released:
            logger.info(
                "alert delivery stopped during a round and released delivery %d of "
                "alert %d, which is due again",
                delivery.id,
                delivery.alert_id,
            )
        else:
            logger.info(
                "alert delivery stopped during a round and left delivery %d of alert "
                "%d as it is, because the delivery changed after the claim",
                delivery.id,
                delivery.alert_id,
            )

    def _log_failure(self, exc: Exception) -> None:
        """Log a failed round, each distinct error once until a round succeeds."""
        self._failed_rounds += 1
        message = f"{type(exc).__name__}: {exc}"
        if message != self._last_error:
            logger.error(
                "alert delivery round failed (%s); trying again every %g s",
                message,
                self.interval,
            )
            self._last_error = message
        # Error messages can quote stored data, so the traceback needs -vv.
        logger.debug("alert delivery round failed", exc_info=exc)


#: Maximum number of delivery ids that the log line of a delivery round lists.
_LOGGED_IDS = 20


def _log_report(report: DeliveryReport) -> None:
    if not (report.sent or report.retrying or report.dead):
        return
    sent = ", ".join(str(number) for number in report.sent[:_LOGGED_IDS])
    if len(report.sent) > _LOGGED_IDS:
        sent += f" and {len(report.sent) - _LOGGED_IDS} more"
    logger.info(
        "alert delivery: %d sent%s, %d to retry, %d dead, %d taken by another process",
        len(report.sent),
        f" (delivery ids {sent})" if sent else "",
        len(report.retrying),
        len(report.dead),
        len(report.skipped),
    )
