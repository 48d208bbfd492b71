"""Per-source-address throttling of the endpoints anyone can POST to (DRF's throttle, used on plain views)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework.throttling import SimpleRateThrottle

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., HttpResponse])


class SourceAddressThrottle(SimpleRateThrottle):
    """`rate` ("60/min") requests per source address in `scope` (behind proxies: DRF's NUM_PROXIES)."""

    def __init__(self, scope: str, rate: str) -> None:
        self.scope = scope
        self.rate = rate
        self.num_requests, self.duration = self.parse_rate(rate)

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


def throttled(scope: str, rate_setting: str) -> Callable[[ViewFunc], ViewFunc]:
    """Answer 429 with Retry-After once a source address exceeds `settings.<rate_setting>` in `scope`."""

    def decorate(view: ViewFunc) -> ViewFunc:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            throttle = SourceAddressThrottle(scope, getattr(settings, rate_setting))
            # DRF's throttle reads only request.META here, so a plain Django request and no view will do;
            # the stubs ask for a DRF Request and an APIView.
            if not throttle.allow_request(request, None):  # type: ignore[arg-type]
                wait = math.ceil(throttle.wait() or 1)
                response = JsonResponse({"error": f"too many requests from this address; retry in {wait} s"},
                                        status=429)
                response["Retry-After"] = str(wait)
                return response
            return view(request, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
