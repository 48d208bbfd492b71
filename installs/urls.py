from django.urls import path

from . import views

urlpatterns = [
    path("install/", views.install, name="b24-install"),
    path("install/runs/<uuid:public_id>/", views.install_run_status, name="b24-install-run"),
    path("install/runs/<uuid:public_id>/retry/", views.install_run_retry, name="b24-install-run-retry"),
    path("events/", views.events, name="b24-events"),
]
