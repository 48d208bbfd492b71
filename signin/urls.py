from django.urls import path

from . import views

urlpatterns = [
    path("", views.home, name="signin-home"),
    path("signin/", views.start, name="signin-start"),
    # The redirect URI to set in the app card (README "Registering the app"): PUBLIC_URL/signin/callback/.
    path("signin/callback/", views.callback, name="signin-callback"),
    path("signout/", views.signout, name="signin-signout"),
]
