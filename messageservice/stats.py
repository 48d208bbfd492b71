"""Delivery statistics: messages per day by status, and totals per carrier and per portal (staff admin);
one portal's messages per day by status (the app page's chart)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone
from django.utils.translation import gettext

from b24portal.charts import daily_series, stacked_bars_svg
from tenants.models import Portal

from .models import Message
from .status import CHART_COLOURS, CHART_LABELS, CHART_ORDER, FINAL, DeliveryStatus, display_status


def _window(days: int) -> Any:
    return timezone.now() - timedelta(days=days)


def messages_in_window(*, days: int, portal_id: int | None = None, carrier: str | None = None) -> QuerySet[Message]:
    # created_at is indexed (alone and with portal); the window bounds the scan.
    queryset = Message.objects.filter(created_at__gte=_window(days))
    if portal_id:
        queryset = queryset.filter(portal_id=portal_id)
    if carrier:
        queryset = queryset.filter(carrier=carrier)
    return queryset.order_by()


def delivery_stats(*, days: int = 30, portal_id: int | None = None, carrier: str | None = None) -> dict[str, Any]:
    queryset = messages_in_window(days=days, portal_id=portal_id, carrier=carrier)
    per_day = list(queryset.annotate(day=TruncDate("created_at")).values("day", "status").annotate(n=Count("id")))
    series = daily_series(per_day, key="status", value="n", days=days)
    per_carrier = _pivot(queryset.values("carrier", "status").annotate(n=Count("id")), "carrier")
    per_portal = _pivot(queryset.values("portal__domain", "status").annotate(n=Count("id")), "portal__domain")
    return {
        "chart": stacked_bars_svg(series, title=gettext("SMS per day by delivery status"), colours=CHART_COLOURS,
                                  order=CHART_ORDER, labels=CHART_LABELS),
        "per_carrier": per_carrier,
        "per_portal": sorted(per_portal, key=lambda row: -row["total"])[:50],
        "statuses": CHART_ORDER,
        "status_labels": CHART_LABELS,
        "total": sum(row["total"] for row in per_carrier),
    }


def _pivot(rows: Any, key: str) -> list[dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = table.setdefault(row[key], {"name": row[key], "total": 0, "counts": dict.fromkeys(CHART_ORDER, 0)})
        entry["counts"][row["status"] or ""] += row["n"]
        entry["total"] += row["n"]
    for entry in table.values():
        delivered = entry["counts"][DeliveryStatus.DELIVERED]
        final = sum(entry["counts"][status] for status in FINAL)
        entry["delivery_rate"] = round(100 * delivered / final, 1) if final else None
        entry["cells"] = [entry["counts"][status] for status in CHART_ORDER]
    return sorted(table.values(), key=lambda entry: str(entry["name"]))


def daily_status_counts(portal: Portal, days: int) -> dict[str, Any]:
    """One portal's messages per day and delivery status over the last `days` days (UTC days; one grouped
    query). A message without a status yet counts where our pipeline has it (`display_status`)."""
    today = timezone.now().date()
    first = today - timedelta(days=days - 1)
    rows = (Message.objects.filter(portal=portal, created_at__date__gte=first)
            .annotate(day=TruncDate("created_at")).values("day", "status", "state")
            .annotate(n=Count("id")).order_by())
    labels = [(first + timedelta(days=i)).isoformat() for i in range(days)]
    series = {name: [0] * days for name in DeliveryStatus.values}
    for row in rows:
        name = display_status(row["status"], row["state"])
        index = (row["day"] - first).days
        if name in series and 0 <= index < days:
            series[name][index] += row["n"]
    return {"days": labels, "series": series, "total": sum(sum(v) for v in series.values())}
