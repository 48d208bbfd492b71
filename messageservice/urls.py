from django.urls import path

from . import views

urlpatterns = [
    path("<str:key>/", views.handler, name="b24-messageservice-handler"),
]
