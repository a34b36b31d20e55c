from django.apps import AppConfig


class CallsConfig(AppConfig):
    name = "calls"
    verbose_name = "Calls"

    def ready(self) -> None:
        from messaging import handlers as messaging_handlers

        from . import handlers

        messaging_handlers.HANDLERS.update(handlers.HANDLERS)
        if handlers.socket_closed not in messaging_handlers.DISCONNECT_HOOKS:
            messaging_handlers.DISCONNECT_HOOKS.append(handlers.socket_closed)
