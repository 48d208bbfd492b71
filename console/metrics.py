"""GET /metrics: Prometheus exposition (prometheus_client), computed at scrape time from cheap queries.

Allowed with `Authorization: Bearer <METRICS_TOKEN>` or from an address in METRICS_ALLOWED_IPS; with neither
configured it refuses everyone. Every figure is one indexed or grouped query (never a COUNT over the whole
message table: message series cover the last 24 hours through `sms_msg_created`, the push backlog and the
staff states use their partial indexes)."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from b24portal.celery import app as celery_app
from messageservice.models import Message
from oauth.models import PortalToken, RestCall, RestCallDaily
from tenants.models import InstallRun, Portal

log = logging.getLogger(__name__)

#: error codes counted as "503" (the portal's REST limit)
LIMIT_CODES = ("QUERY_LIMIT_EXCEEDED", "OVERLOAD_LIMIT")


def celery_queues() -> list[str]:
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values() if "queue" in route}
    return sorted(routed | {settings.CELERY_TASK_DEFAULT_QUEUE})


def queue_lengths() -> dict[str, int] | None:
    """Messages waiting in each Celery queue, or None when the broker cannot be reached."""
    lengths: dict[str, int] = {}
    try:
        with celery_app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            channel: Any = conn.default_channel
            for queue in celery_queues():
                try:
                    lengths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
                except Exception:  # a queue nothing was ever published to does not exist yet
                    lengths[queue] = 0
                    channel = conn.channel()
    except Exception as exc:
        log.warning("metrics: broker unreachable", extra={"error_type": type(exc).__name__})
        return None
    return lengths


class ServiceCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        since = now - timedelta(hours=24)

        messages = GaugeMetricFamily("b24portal_messages_24h", "Messages created in the last 24 hours",
                                     labels=["state", "status"])
        sends = GaugeMetricFamily("b24portal_sends_24h", "Messages handed to (or refused by) a carrier, 24 hours",
                                  labels=["carrier"])
        failures = GaugeMetricFamily("b24portal_send_failures_24h",
                                     "Messages failed (ours or the carrier's verdict), 24 hours", labels=["carrier"])
        per_carrier: dict[str, list[int]] = {}
        rows = (Message.objects.filter(created_at__gte=since).values("carrier", "state", "status")
                .annotate(n=Count("id")).order_by())
        by_state: dict[tuple[str, str], int] = {}
        for row in rows:
            key = (row["state"], row["status"] or "none")
            by_state[key] = by_state.get(key, 0) + row["n"]
            totals = per_carrier.setdefault(row["carrier"], [0, 0])
            if row["state"] in (Message.State.HANDED_TO_CARRIER, Message.State.FAILED):
                totals[0] += row["n"]
            if Message.is_failed_send(row["state"], row["status"]):
                totals[1] += row["n"]
        for (state, status), n in sorted(by_state.items()):
            messages.add_metric([state, status], n)
        for carrier, (sent, failed) in sorted(per_carrier.items()):
            sends.add_metric([carrier], sent)
            failures.add_metric([carrier], failed)
        yield messages
        yield sends
        yield failures

        staff = GaugeMetricFamily("b24portal_messages_needing_staff", "Messages failed or needing review (all time)",
                                  labels=["state"])
        for state, n in (Message.objects.filter(state__in=[Message.State.FAILED, Message.State.NEEDS_REVIEW])
                         .values_list("state").annotate(n=Count("id")).order_by()):
            staff.add_metric([state], n)
        yield staff
        yield GaugeMetricFamily("b24portal_push_backlog", "Delivery statuses Bitrix24 has not been told yet",
                                value=Message.objects.filter(push_due=True).count())
        yield GaugeMetricFamily("b24portal_dispatch_backlog",
                                "Handler messages the SMS worker's outbox dispatcher has not published yet",
                                value=Message.objects.filter(dispatch_pending=True).count())
        yield GaugeMetricFamily("b24portal_send_backlog", "Messages waiting to be sent (accepted or retrying)",
                                value=Message.objects.filter(state__in=Message.SENDABLE).count())

        daily = RestCallDaily.objects.filter(day=now.date()).aggregate(
            all_calls=Sum("calls"), errors=Sum("calls", filter=~Q(error_code="")),
            limited=Sum("calls", filter=Q(error_code__in=LIMIT_CODES)))
        rest = GaugeMetricFamily("b24portal_rest_calls_today", "REST calls today (daily roll-up)", labels=["outcome"])
        rest.add_metric(["ok"], (daily["all_calls"] or 0) - (daily["errors"] or 0))
        rest.add_metric(["error"], daily["errors"] or 0)
        yield rest
        yield GaugeMetricFamily("b24portal_rest_503_today", "REST calls refused by the portal's limit today (roll-up)",
                                value=daily["limited"] or 0)
        recent = GaugeMetricFamily("b24portal_rest_calls_logged_1h", "REST calls logged in the last hour (failures "
                                   "and non-routine calls) by HTTP status", labels=["http_status"])
        for code, n in (RestCall.objects.filter(created_at__gte=now - timedelta(hours=1))
                        .values_list("http_status").annotate(n=Count("id")).order_by()):
            recent.add_metric([str(code or "none")], n)
        yield recent

        tokens = PortalToken.objects.aggregate(refreshes=Sum("refresh_count"),
                                               failing=Count("id", filter=~Q(last_refresh_error="")),
                                               total=Count("id"))
        refreshes = CounterMetricFamily("b24portal_token_refreshes", "Token refreshes that succeeded, all tokens")
        refreshes.add_metric([], tokens["refreshes"] or 0)
        yield refreshes
        outcome = GaugeMetricFamily("b24portal_tokens_by_refresh_outcome", "Tokens by their last refresh's outcome",
                                    labels=["outcome"])
        outcome.add_metric(["ok"], (tokens["total"] or 0) - (tokens["failing"] or 0))
        outcome.add_metric(["refused"], tokens["failing"] or 0)
        yield outcome

        portals = GaugeMetricFamily("b24portal_portals", "Portals by status", labels=["status"])
        counted = dict(Portal.objects.values_list("status").annotate(n=Count("id")).order_by())
        for status in Portal.Status.values:
            portals.add_metric([status], counted.get(status, 0))
        yield portals
        runs = GaugeMetricFamily("b24portal_install_runs", "Install runs by result", labels=["result"])
        counted = dict(InstallRun.objects.values_list("status").annotate(n=Count("id")).order_by())
        for status in InstallRun.Status.values:
            runs.add_metric([status], counted.get(status, 0))
        yield runs

        lengths = queue_lengths()
        yield GaugeMetricFamily("b24portal_broker_up", "1 if the Celery broker answered", value=int(lengths is not None))
        queues = GaugeMetricFamily("b24portal_celery_queue_length", "Tasks waiting per Celery queue", labels=["queue"])
        for queue, n in sorted((lengths or {}).items()):
            queues.add_metric([queue], n)
        yield queues


def allowed(request: HttpRequest) -> bool:
    token = str(settings.METRICS_TOKEN)
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), token):
        return True
    address = request.META.get("REMOTE_ADDR", "")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in settings.METRICS_ALLOWED_IPS:
        try:
            if ip in ipaddress.ip_network(str(entry).strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not allowed(request):
        response = HttpResponse("metrics: a bearer token or an allowed address is required\n", status=401,
                                content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
