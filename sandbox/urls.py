from django.urls import path, re_path

from . import views

urlpatterns = [
    path("sandbox/", views.applications, name="sandbox-applications"),
    path("sandbox/crm/<str:entity>/", views.crm_list, name="sandbox-crm-list"),
    path("sandbox/crm/<str:entity>/<int:item_id>/", views.crm_card, name="sandbox-crm-card"),
    path("sandbox/crm/<str:entity>/<int:item_id>/timeline/", views.timeline, name="sandbox-timeline"),
    path("sandbox/crm/<str:entity>/<int:item_id>/send/", views.send_sms, name="sandbox-send"),
    path("sandbox/registered/", views.registered, name="sandbox-registered"),
    path("sandbox/log/", views.log_page, name="sandbox-log"),
    path("sandbox/log/entries/", views.log_entries, name="sandbox-log-entries"),
    path("sandbox/frame/", views.frame, name="sandbox-frame"),
    path("sandbox/bx24/", views.bx24_call, name="sandbox-bx24"),
    path("sandbox/bx24.js", views.bx24_js, name="sandbox-bx24-js"),
    path("sandbox/uninstall/", views.uninstall, name="sandbox-uninstall"),
    path("sandbox/update/", views.update_app, name="sandbox-update"),
    path("sandbox/reset/", views.reset, name="sandbox-reset"),
    # The wire: the auth server, the carrier and the portal's REST API (a portal's REST is at /rest/).
    re_path(r"^sandbox/(?P<path>oauth/token/?|rest/.+)$", views.oauth_server, name="sandbox-oauth"),
    re_path(r"^sandbox/carrier/smsru/(?P<path>.+)$", views.carrier, name="sandbox-carrier"),
    re_path(r"^rest/(?P<method>.+)$", views.portal_rest, name="sandbox-portal-rest"),
]
