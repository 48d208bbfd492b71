from django.apps import apps
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from b24portal import health

admin.site.site_header = "b24portal support"
admin.site.site_title = "b24portal"

urlpatterns = [
    path("health/", health.alive, name="health"),
    path("health/ready/", health.ready, name="health-ready"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/v1/", include("records.urls")),
    path("b24/", include("installs.urls")),
    path("b24/messageservice/", include("messageservice.urls")),
    path("b24/", include("placements.urls")),
    path("cabinet/", include("cabinet.urls")),
    path("", include("console.urls")),  # /metrics
    path("", include("signin.urls")),  # /, sign in with Bitrix24, sign out
]
if apps.is_installed("sandbox"):  # development only (SANDBOX_ENABLED; its views also 404 when it is off)
    urlpatterns.append(path("", include("sandbox.urls")))
