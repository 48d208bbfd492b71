from django.urls import path

from . import api, views

urlpatterns = [
    path("", views.my_messages, name="cabinet-home"),
    path("templates/", views.templates, name="cabinet-templates"),
    path("templates/<int:pk>/", views.template_detail, name="cabinet-template"),
    path("portal/", views.portal_admin, name="cabinet-portal"),
    path("portal/api-keys/", views.api_keys, name="cabinet-api-keys"),
    path("portal/sync-jobs/", views.sync_jobs, name="cabinet-sync-jobs"),
    # The JSON API (frame token): the slider's template picker and any framed page.
    path("api/templates/", api.TemplateListView.as_view(), name="cabinet-api-templates"),
    path("api/templates/<int:pk>/", api.TemplateDetailView.as_view(), name="cabinet-api-template"),
    path("api/templates/<int:pk>/fill/", api.TemplateFillView.as_view(), name="cabinet-api-template-fill"),
]
