from django.apps import AppConfig


class MessageserviceConfig(AppConfig):
    name = "messageservice"
