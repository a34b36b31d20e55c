from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "core"

    def ready(self) -> None:
        from core import sentry

        sentry.init()  # error tracking when SENTRY_DSN is set (every process that sets Django up)
