"""The SMS-template JSON API, with the frame token as the only credential (placements.auth): list, add,
change, delete, and fill one for the CRM item a slider's token was issued for. Every lookup goes through
`templates_for(portal, user)`, so another user's personal template or another portal's is a 404; changing
a portal-wide one takes the token's proven admin flag (403 otherwise; an `is_admin` in the body is
ignored like any unknown field)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from messageservice.api import validation_response
from messageservice.sending import MAX_BODY_CHARS
from placements.auth import TenantScopedMixin
from placements.crm import ENTITIES

from .models import SmsTemplate
from .sms_templates import (
    NAME_MAX,
    TemplateForbidden,
    do_delete_template,
    do_save_template,
    fill_for_item,
    may_edit,
    templates_for,
)


class TemplateSerializer(serializers.ModelSerializer):
    portal_wide = serializers.BooleanField(source="is_portal_wide", read_only=True)
    editable = serializers.SerializerMethodField()

    class Meta:
        model = SmsTemplate
        fields = ("id", "name", "body", "portal_wide", "editable", "updated_at")

    def get_editable(self, template: SmsTemplate) -> bool:
        return may_edit(self.context["principal"], template)


class TemplateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=NAME_MAX, required=False)
    body = serializers.CharField(max_length=MAX_BODY_CHARS, trim_whitespace=False, required=False)
    portal_wide = serializers.BooleanField(required=False, default=False)


class FillSerializer(serializers.Serializer):
    to = serializers.CharField(max_length=64, required=False, allow_blank=True)


class TemplateAPIMixin(TenantScopedMixin):
    def scoped_queryset(self, portal: Any) -> QuerySet[SmsTemplate]:
        return templates_for(portal, self.principal.user_id)

    def template(self, pk: int) -> SmsTemplate:
        template = self.get_queryset().filter(pk=pk).first()
        if template is None:
            raise NotFound("no such template")
        return template

    def show(self, template: SmsTemplate, code: int = status.HTTP_200_OK) -> Response:
        return Response(TemplateSerializer(template, context={"principal": self.principal}).data, status=code)


class TemplateListView(TemplateAPIMixin):
    def get(self, request: Request) -> Response:
        rows = TemplateSerializer(self.get_queryset(), many=True, context={"principal": self.principal}).data
        return Response({"templates": rows})

    def post(self, request: Request) -> Response:
        form = TemplateInputSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            template = do_save_template(self.principal, name=form.validated_data.get("name"),
                                        body=form.validated_data.get("body"),
                                        portal_wide=form.validated_data["portal_wide"])
        except TemplateForbidden as exc:
            raise PermissionDenied(exc.reason) from None
        except ValidationError as exc:
            return validation_response(exc)
        return self.show(template, status.HTTP_201_CREATED)


class TemplateDetailView(TemplateAPIMixin):
    def get(self, request: Request, pk: int) -> Response:
        return self.show(self.template(pk))

    def patch(self, request: Request, pk: int) -> Response:
        template = self.template(pk)
        form = TemplateInputSerializer(data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        try:
            template = do_save_template(self.principal, name=form.validated_data.get("name", template.name),
                                        body=form.validated_data.get("body", template.body), template=template)
        except TemplateForbidden as exc:
            raise PermissionDenied(exc.reason) from None
        except ValidationError as exc:
            return validation_response(exc)
        return self.show(template)

    def delete(self, request: Request, pk: int) -> Response:
        try:
            do_delete_template(self.principal, self.template(pk))
        except TemplateForbidden as exc:
            raise PermissionDenied(exc.reason) from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class TemplateFillView(TemplateAPIMixin):
    """The template's text for the CRM item this frame token was issued for (the list-menu slider hands out
    an item-bound token): the item is read again with the user's own token, `to` must be one of its phones
    (default: the first). A token not bound to an item is a 403."""

    def get(self, request: Request, pk: int) -> Response:
        template = self.template(pk)  # a foreign id is a 404 whatever the token
        scope = self.principal.item
        if scope is None or scope[0] not in ENTITIES:
            raise PermissionDenied("templates are filled in from a CRM item's SMS slider")
        form = FillSerializer(data=request.query_params)
        form.is_valid(raise_exception=True)
        item = self.load_scoped_item()
        phones = [phone.value for phone in item.phones]
        to = (form.validated_data.get("to") or "").strip() or (phones[0] if phones else "")
        if to and to not in phones:
            return Response({"to": ["not one of this item's phone numbers"]}, status=status.HTTP_400_BAD_REQUEST)
        with self.bitrix24_answers():  # a template may read the item's company too
            body = fill_for_item(self.user_client, template, item, phone=to)
        return Response({"template": template.pk, "body": body})
