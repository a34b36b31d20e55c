from django.apps import AppConfig


class CallsConfig(AppConfig):
    name = "calls"
    verbose_name = "Calls"

    def ready(self) -> None:
        from accounts import services as account_services
        from messaging import handlers as messaging_handlers

        from . import handlers, services

        account_services.register_export_section("calls", services.export_user_calls)

        messaging_handlers.HANDLERS.update(handlers.HANDLERS)
        if handlers.socket_closed not in messaging_handlers.DISCONNECT_HOOKS:
            messaging_handlers.DISCONNECT_HOOKS.append(handlers.socket_closed)
