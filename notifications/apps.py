from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Push notifications"

    def ready(self) -> None:
        from messaging import services as messaging_services
        from messaging.send_rules import registry

        from . import checks, receivers, services

        checks.register()
        # A new message's push rows: the written hook, in the message's own transaction (every
        # writer runs it); ``message_committed`` is not needed for them.
        registry.register_hook(services.PUSH_OUTBOX_HOOK)
        messaging_services.message_updated.connect(
            receivers.on_message_updated, dispatch_uid="notifications.message_updated"
        )
