"""The records API (`/api/v1/`): an external system creates, updates and moves its records; each call
stores a job and answers 202 with its id; the job's outcome is at `GET /api/v1/jobs/<id>/` and in the
replies (callbacks) of the key.

Auth: `Authorization: Bearer <API key>` (keys.active_key: by hash, revoked → 401); a key reaches only its
own portal, so another portal's record or job is a 404. Bodies are JSON within the project's limits
(b24portal.parsers), requests are throttled per source address (RECORDS_THROTTLE). Views stay thin: the
intake (records.intake.do_accept_job) validates and stores; its `Rejected` becomes the answer.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from b24portal.intake import Rejected
from tenants.models import Portal

from .intake import InvalidRecord, do_accept_job
from .keys import active_key
from .models import ApiKey, Record, SyncJob

SCHEME = "Bearer"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class ApiClient:
    """request.user of the records API: the key and its portal."""

    is_authenticated = True

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.portal: Portal = api_key.portal


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ApiClient, ApiKey] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != SCHEME.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("malformed Authorization header: Bearer <API key>")
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("unknown or revoked API key") from None
        api_key = active_key(raw)
        if api_key is None:
            raise exceptions.AuthenticationFailed("unknown or revoked API key")
        return ApiClient(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return f'{SCHEME} realm="records"'  # a 401 (not 403) without a key


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "records.api.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "A records API key created in admin"}


class HasApiKey(BasePermission):
    message = "an API key is required: Authorization: Bearer <key>"

    def has_permission(self, request: Request, view: Any) -> bool:
        client = request.user
        if not isinstance(client, ApiClient):
            return False
        if client.portal.status in (Portal.Status.DELETED, Portal.Status.BLOCKED):
            raise exceptions.PermissionDenied(f"the portal is {client.portal.get_status_display().lower()}")
        return True


class SourceAddressThrottle(SimpleRateThrottle):
    scope = "records"

    def get_rate(self) -> str:
        return str(settings.RECORDS_THROTTLE)

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


# -- documentation shapes ------------------------------------------------------------------------------
class RecordFieldsSerializer(serializers.Serializer):
    full_name = serializers.CharField(max_length=255, required=False)
    phone = serializers.CharField(help_text="E.164 or with its country code; stored as E.164", required=False)
    stage = serializers.CharField(max_length=50, required=False, help_text="An external stage of the mapping")
    email = serializers.EmailField(required=False)
    comment = serializers.CharField(required=False)
    extra = serializers.DictField(required=False, help_text="More lead fields (SOURCE_ID, UTM_*, UF_CRM_*, ...)")


class RecordCreateSerializer(RecordFieldsSerializer):
    external_id = serializers.CharField(max_length=100, help_text="Your id of the record")


class MoveSerializer(serializers.Serializer):
    stage = serializers.CharField(max_length=50)


class JobSerializer(serializers.ModelSerializer):
    external_id = serializers.CharField(source="record.external_id", read_only=True)
    status_url = serializers.SerializerMethodField()

    class Meta:
        model = SyncJob
        fields = ("id", "action", "state", "external_id", "lead_id", "attempts", "last_error", "created_at",
                  "next_attempt_at", "finished_at", "status_url")

    def get_status_url(self, job: SyncJob) -> str:
        return f"/api/v1/jobs/{job.pk}/"


class RecordSerializer(serializers.ModelSerializer):
    class Meta:
        model = Record
        fields = ("external_id", "lead_id", "stage", "last_outcome", "last_error", "created_at", "updated_at")


FIELD_ERRORS = OpenApiResponse(description="Field errors; nothing was stored",
                               response=inline_serializer("FieldErrors", {"field": serializers.ListField(
                                   child=serializers.CharField())}))
IDEMPOTENCY = OpenApiParameter(IDEMPOTENCY_HEADER, str, OpenApiParameter.HEADER, required=False,
                               description="A repeated request with the same key returns the first job")


class RecordsAPIView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasApiKey]
    throttle_classes = [SourceAddressThrottle]

    @property
    def client(self) -> ApiClient:
        user = self.request.user
        assert isinstance(user, ApiClient)  # HasApiKey let the request in
        return user

    def body(self) -> dict[str, Any]:
        data = self.request.data
        if not isinstance(data, dict):
            raise exceptions.ParseError("the body must be a JSON object")
        return data

    def accept(self, action: str, external_id: Any, fields: dict[str, Any]) -> Response:
        try:
            job, created = do_accept_job(
                self.client.portal, action=action, external_id=external_id, fields=fields,
                idempotency_key=self.request.headers.get(IDEMPOTENCY_HEADER), source=SyncJob.Source.HTTP,
                api_key=self.client.api_key)
        except InvalidRecord as exc:
            return Response(exc.field_errors, status=status.HTTP_400_BAD_REQUEST)
        except Rejected as exc:
            return Response({"detail": exc.reason}, status=exc.status)
        response = Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
        response["Location"] = f"/api/v1/jobs/{job.pk}/"
        if not created:
            response["Idempotent-Replayed"] = "true"
        return response

    def records(self) -> QuerySet[Record]:
        return Record.objects.filter(portal=self.client.portal)

    def record(self, external_id: str) -> Record:
        record = self.records().filter(external_id=external_id[:100]).first()
        if record is None:
            raise exceptions.NotFound(f"no record with external_id {external_id[:100]!r}")
        return record


class RecordListView(RecordsAPIView):
    @extend_schema(request=RecordCreateSerializer, parameters=[IDEMPOTENCY],
                   responses={202: JobSerializer, 400: FIELD_ERRORS}, summary="Create a record (a lead)")
    def post(self, request: Request) -> Response:
        body = dict(self.body())
        external_id = body.pop("external_id", None)
        return self.accept(SyncJob.Action.CREATE, external_id, body)


class RecordDetailView(RecordsAPIView):
    @extend_schema(responses={200: RecordSerializer}, summary="A record: its lead id, stage and last outcome")
    def get(self, request: Request, external_id: str) -> Response:
        return Response(RecordSerializer(self.record(external_id)).data)

    @extend_schema(request=RecordFieldsSerializer, parameters=[IDEMPOTENCY],
                   responses={202: JobSerializer, 400: FIELD_ERRORS}, summary="Update a record")
    def patch(self, request: Request, external_id: str) -> Response:
        body = dict(self.body())
        if "external_id" in body and str(body.pop("external_id")) != external_id:
            return Response({"external_id": ["differs from the one in the URL"]}, status=status.HTTP_400_BAD_REQUEST)
        return self.accept(SyncJob.Action.UPDATE, external_id, body)


class RecordMoveView(RecordsAPIView):
    @extend_schema(request=MoveSerializer, parameters=[IDEMPOTENCY],
                   responses={202: JobSerializer, 400: FIELD_ERRORS}, summary="Move a record to a stage")
    def post(self, request: Request, external_id: str) -> Response:
        return self.accept(SyncJob.Action.MOVE, external_id, self.body())


class JobDetailView(RecordsAPIView):
    @extend_schema(responses={200: JobSerializer}, summary="A job: its state, lead id and error")
    def get(self, request: Request, job_id: int) -> Response:
        job = SyncJob.objects.filter(portal=self.client.portal, pk=job_id).select_related("record").first()
        if job is None:
            raise exceptions.NotFound("no such job")
        return Response(JobSerializer(job).data)
