from django.urls import path

from . import api

urlpatterns = [
    path("records/", api.RecordListView.as_view(), name="records-api-records"),
    path("records/<str:external_id>/", api.RecordDetailView.as_view(), name="records-api-record"),
    path("records/<str:external_id>/move/", api.RecordMoveView.as_view(), name="records-api-record-move"),
    path("jobs/<int:job_id>/", api.JobDetailView.as_view(), name="records-api-job"),
]
