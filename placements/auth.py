"""Our API as called by the framed pages: the frame token is the only credential.

`FrameTokenAuthentication` reads `Authorization: Frame <token>` (or `X-Frame-Token`), `IsFrameUser` /
`IsFrameAdmin` gate the views, and `TenantScopedMixin` scopes every queryset to the token's portal in
`get_queryset()`, so an id of another portal is simply not found (404), never fetched and checked later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from django.db.models import QuerySet
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from b24portal.intake import Rejected
from tenants.models import Portal

from .frames import FramePrincipal, read_frame_token

if TYPE_CHECKING:
    from rest_framework.permissions import _PermissionClass

HEADER_SCHEME = "Frame"


class FrameTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[FramePrincipal, str] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        token = ""
        if header:
            scheme, _, value = header.partition(" ")
            if scheme != HEADER_SCHEME:
                return None
            token = value.strip()
        else:
            token = request.META.get("HTTP_X_FRAME_TOKEN", "").strip()
            if not token:
                return None
        if not token or len(token) > 2048:
            raise exceptions.AuthenticationFailed("invalid frame token")
        try:
            principal = read_frame_token(token)
        except Rejected as exc:
            if exc.status == 403:
                raise exceptions.PermissionDenied(exc.reason) from None
            raise exceptions.AuthenticationFailed(exc.reason) from None
        return principal, token

    def authenticate_header(self, request: Request) -> str:
        return HEADER_SCHEME  # a 401 (not 403) for a missing or expired token


class IsFrameUser(BasePermission):
    message = "a frame token is required"

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, FramePrincipal)


class IsFrameAdmin(IsFrameUser):
    message = "only portal administrators may do this"

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return super().has_permission(request, view) and isinstance(user, FramePrincipal) and bool(user.is_admin)


class FrameAPIMixin(APIView):
    authentication_classes: Sequence[type[BaseAuthentication]] = [FrameTokenAuthentication]
    permission_classes: Sequence[_PermissionClass] = [IsFrameUser]

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # Once the caller is known: parse any body now (DRF parses lazily), so a body over the JSON limits
        # is a 400 even on a view that ignores its body, instead of that view acting on the request.
        request.data  # noqa: B018

    @property
    def principal(self) -> FramePrincipal:
        return cast(FramePrincipal, self.request.user)  # FrameTokenAuthentication + IsFrameUser guarantee it

    @property
    def portal(self) -> Portal:
        return self.principal.portal

    @property
    def user_id(self) -> int:
        return self.principal.user_id


class TenantScopedMixin(FrameAPIMixin):
    """Subclasses implement `scoped_queryset(portal)`; everything (list, detail, update) goes through it."""

    def scoped_queryset(self, portal: Portal) -> QuerySet[Any]:
        raise NotImplementedError

    def get_queryset(self) -> QuerySet[Any]:
        return self.scoped_queryset(self.portal)
