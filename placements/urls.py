from django.urls import path

from . import api, views

urlpatterns = [
    # Frames Bitrix24 POSTs into (handlers registered with placement.bind / userfieldtype.add / app card).
    path("placements/crm-list-menu/", views.crm_list_menu, name="placements-crm-list-menu"),
    path("placements/app-uri/", views.app_uri, name="placements-app-uri"),
    path("placements/userfield/consent/", views.consent_field, name="placements-consent-field"),
    path("app/", views.app_page, name="placements-app"),
    # The API those pages call with their frame token.
    path("placements/api/items/<str:entity>/<int:item_id>/messages/", api.ItemMessagesView.as_view(),
         name="placements-api-item-messages"),
    path("placements/api/my-messages/", api.MyMessagesView.as_view(), name="placements-api-my-messages"),
    path("placements/api/accounts/", api.AccountListView.as_view(), name="placements-api-accounts"),
    path("placements/api/accounts/<int:pk>/", api.AccountDetailView.as_view(), name="placements-api-account"),
    path("placements/api/accounts/<int:pk>/deactivate/", api.AccountDeactivateView.as_view(),
         name="placements-api-account-deactivate"),
    path("placements/api/accounts/<int:pk>/test/", api.AccountTestView.as_view(),
         name="placements-api-account-test"),
    path("placements/api/stats/", api.StatsView.as_view(), name="placements-api-stats"),
    path("placements/api/bindings/", api.BindingListView.as_view(), name="placements-api-bindings"),
    path("placements/api/consent/", api.ConsentView.as_view(), name="placements-api-consent"),
]
