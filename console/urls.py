from django.urls import path

from . import metrics

urlpatterns = [
    path("metrics", metrics.metrics, name="metrics"),
]
