from django.apps import AppConfig


class HealthchatConfig(AppConfig):
    name = "healthchat"
    verbose_name = "healthchat"
