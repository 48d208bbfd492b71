"""The JSON API the framed pages call (frame token only; see auth.py). Thin: parse, access through the
portal-scoped getters, act through the messageservice service functions, serialize."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.generics import ListAPIView, RetrieveUpdateAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from messageservice import consent as consent_api
from messageservice.accounts import (
    accounts_for,
    do_deactivate_account,
    do_save_account,
    do_send_test_sms,
    get_account,
)
from messageservice.carriers import CARRIER_CHOICES
from messageservice.models import Message, ProviderAccount
from messageservice.phones import mask_phone
from messageservice.sending import (
    MAX_BODY_CHARS,
    do_send_from_widget,
    messages_by_author,
    messages_for_binding,
)
from messageservice.status import DeliveryStatus, display_status
from oauth.client import PortalClient
from oauth.errors import B24Error

from .auth import FrameAPIMixin, IsFrameAdmin, TenantScopedMixin
from .crm import ENTITIES, ItemUnavailable, load_item
from .models import Binding
from .tasks import add_timeline_comment

MAX_STAT_DAYS = 90


class MessageSerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField()
    account = serializers.CharField(source="account.name", read_only=True)

    class Meta:
        model = Message
        fields = ("id", "recipient", "recipient_raw", "body", "status", "state", "created_at", "author_user_id",
                  "account", "origin")

    def get_status(self, message: Message) -> str:
        return message.display_status


class AccountSerializer(serializers.ModelSerializer):
    """Credentials are write-only: only their key names are shown back."""

    credential_keys = serializers.SerializerMethodField()

    class Meta:
        model = ProviderAccount
        fields = ("id", "carrier", "code", "name", "sender", "is_active", "registration_state",
                  "registration_error", "credential_keys")

    def get_credential_keys(self, account: ProviderAccount) -> list[str]:
        return sorted((account.credentials or {}).keys())


def _validation_response(exc: ValidationError) -> Response:
    detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
    return Response(detail, status=status.HTTP_400_BAD_REQUEST)


def _actor(request: Request) -> str:
    return f"bitrix24:user{request.user.user_id}"


# -- CRM item: SMS history and sending -----------------------------------------------------------------------
class ItemMixin(FrameAPIMixin):
    def item_scope(self, entity: str, item_id: int) -> tuple[str, int]:
        entity = entity.upper()
        if entity not in ENTITIES:
            raise NotFound("unknown CRM entity")
        # The token must have been issued for exactly this item: the user was shown it with their own rights.
        if self.principal.item != (entity, item_id):
            raise PermissionDenied("this frame token is not for this item")
        return entity, item_id


class SendSerializer(serializers.Serializer):
    account = serializers.IntegerField(min_value=1)
    to = serializers.CharField(max_length=64)
    body = serializers.CharField(max_length=MAX_BODY_CHARS, trim_whitespace=False)


class ItemMessagesView(ItemMixin, APIView):
    def get(self, request: Request, entity: str, item_id: int) -> Response:
        entity, item_id = self.item_scope(entity, item_id)
        rows = messages_for_binding(self.portal, ENTITIES[entity].owner_type_id, item_id).select_related(
            "account")[:100]
        return Response({"messages": MessageSerializer(rows, many=True).data})

    def post(self, request: Request, entity: str, item_id: int) -> Response:
        entity, item_id = self.item_scope(entity, item_id)
        form = SendSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            account = get_account(self.portal, form.validated_data["account"])
        except ProviderAccount.DoesNotExist:
            raise NotFound("no such provider account") from None
        # Read the item again with the user's own token: the number must be one of ITS phones, now.
        try:
            item = load_item(PortalClient(self.portal, user_id=self.principal.user_id), ENTITIES[entity], item_id)
        except ItemUnavailable as exc:
            raise PermissionDenied(exc.reason) from None
        except B24Error as exc:
            return Response({"detail": f"Bitrix24: {exc.code}", "retryable": exc.retryable},
                            status=status.HTTP_503_SERVICE_UNAVAILABLE if exc.retryable else status.HTTP_502_BAD_GATEWAY)
        to = form.validated_data["to"].strip()
        if to not in {phone.value for phone in item.phones}:
            return Response({"to": ["not one of this item's phone numbers"]}, status=status.HTTP_400_BAD_REQUEST)
        body = form.validated_data["body"]
        try:
            with transaction.atomic():
                message = do_send_from_widget(self.portal, account=account, to=to, body=body,
                                                  bindings=item.bindings(), user_id=self.principal.user_id)
                comment = f"SMS to {to} via {account.name}: {body}"
                args = (self.portal.pk, self.principal.user_id, entity, item_id, comment[:2000])
                transaction.on_commit(lambda: add_timeline_comment.delay(*args))
        except ValidationError as exc:
            return _validation_response(exc)
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED)


# -- the app page: the user's own messages, and (admins) accounts, stats, bindings -------------------------------
class MyMessagesView(TenantScopedMixin, ListAPIView):
    serializer_class = MessageSerializer
    pagination_class = None

    def scoped_queryset(self, portal: Any) -> QuerySet[Message]:
        return messages_by_author(portal, self.principal.user_id).select_related("account")[:100]


class AccountCreateSerializer(serializers.Serializer):
    carrier = serializers.CharField(max_length=20)
    code = serializers.CharField(max_length=50)
    name = serializers.CharField(max_length=100)
    sender = serializers.CharField(max_length=64, required=False, allow_blank=True)
    credentials = serializers.DictField(child=serializers.CharField(allow_blank=True, max_length=500),
                                        required=False)
    is_active = serializers.BooleanField(required=False)


class AccountListView(TenantScopedMixin, APIView):
    permission_classes = [IsFrameAdmin]

    def scoped_queryset(self, portal: Any) -> QuerySet[ProviderAccount]:
        return accounts_for(portal, active_only=False).order_by("-is_active", "name")

    def get(self, request: Request) -> Response:
        return Response({"accounts": AccountSerializer(self.get_queryset(), many=True).data,
                         "carriers": [{"kind": kind, "label": label} for kind, label in CARRIER_CHOICES]})

    def post(self, request: Request) -> Response:
        form = AccountCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            account = do_save_account(self.portal, data=dict(form.validated_data), actor=_actor(request))
        except ValidationError as exc:
            return _validation_response(exc)
        return Response(AccountSerializer(account).data, status=status.HTTP_201_CREATED)


class AccountDetailView(TenantScopedMixin, RetrieveUpdateAPIView):
    permission_classes = [IsFrameAdmin]
    serializer_class = AccountSerializer

    def scoped_queryset(self, portal: Any) -> QuerySet[ProviderAccount]:
        return accounts_for(portal, active_only=False)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        account = self.get_object()  # 404 for another portal's account: the queryset is scoped
        form = AccountCreateSerializer(data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        try:
            account = do_save_account(self.portal, data=dict(form.validated_data), account=account,
                                          actor=_actor(request))
        except ValidationError as exc:
            return _validation_response(exc)
        return Response(AccountSerializer(account).data)


class AccountDeactivateView(TenantScopedMixin, APIView):
    permission_classes = [IsFrameAdmin]

    def scoped_queryset(self, portal: Any) -> QuerySet[ProviderAccount]:
        return accounts_for(portal, active_only=False)

    def post(self, request: Request, pk: int) -> Response:
        account = self.get_queryset().filter(pk=pk).first()
        if account is None:
            raise NotFound("no such provider account")
        do_deactivate_account(self.portal, account, actor=_actor(request))
        return Response(AccountSerializer(account).data)


class TestSmsSerializer(serializers.Serializer):
    to = serializers.CharField(max_length=64)


class AccountTestView(AccountDeactivateView):
    def post(self, request: Request, pk: int) -> Response:
        account = self.get_queryset().filter(pk=pk).first()
        if account is None:
            raise NotFound("no such provider account")
        form = TestSmsSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            message = do_send_test_sms(self.portal, account, to=form.validated_data["to"],
                                           actor=_actor(request))
        except ValidationError as exc:
            return _validation_response(exc)
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED)


def delivery_stats(portal: Any, days: int) -> dict[str, Any]:
    """Messages per day and delivery status over the last `days` days (UTC days; one grouped query)."""
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


class StatsView(FrameAPIMixin, APIView):
    permission_classes = [IsFrameAdmin]

    def get(self, request: Request) -> Response:
        try:
            days = int(request.query_params.get("days", 14))
        except ValueError:
            return Response({"days": ["a number"]}, status=status.HTTP_400_BAD_REQUEST)
        if not 1 <= days <= MAX_STAT_DAYS:
            return Response({"days": [f"from 1 to {MAX_STAT_DAYS}"]}, status=status.HTTP_400_BAD_REQUEST)
        return Response(delivery_stats(self.portal, days))


class BindingSerializer(serializers.ModelSerializer):
    class Meta:
        model = Binding
        fields = ("kind", "code", "state", "last_checked_at", "last_error")


class BindingListView(TenantScopedMixin, ListAPIView):
    permission_classes = [IsFrameAdmin]
    serializer_class = BindingSerializer
    pagination_class = None

    def scoped_queryset(self, portal: Any) -> QuerySet[Binding]:
        return Binding.objects.filter(portal=portal).order_by("kind", "code")


# -- SMS consent ---------------------------------------------------------------------------------------------
class ConsentSerializer(serializers.Serializer):
    phone = serializers.CharField(max_length=64)
    opted_in = serializers.BooleanField()


def consent_row(phone: str, decision: Any) -> dict[str, Any]:
    return {"phone": phone, "opted_in": None if decision is None else decision.opted_in,
            "changed_at": decision.changed_at if decision else None,
            "changed_by_user_id": decision.changed_by_user_id if decision else None,
            "source": decision.source if decision else ""}


class ConsentView(FrameAPIMixin, APIView):
    def post(self, request: Request) -> Response:
        form = ConsentSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        phone = form.validated_data["phone"].strip()
        try:
            decision = consent_api.do_set_consent(self.portal, phone=phone, opted_in=form.validated_data["opted_in"],
                                                  user_id=self.principal.user_id, source="userfield")
        except ValidationError as exc:
            return _validation_response(exc)
        return Response({**consent_row(phone, decision), "masked": mask_phone(decision.phone)})
