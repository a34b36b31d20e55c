from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Push notifications"

    def ready(self) -> None:
        from messaging import services as messaging_services

        from . import checks, receivers, services

        checks.register()
        messaging_services.message_committed.connect(
            receivers.on_message_committed, dispatch_uid="notifications.message_committed"
        )
        if services.push_enqueue_batch not in messaging_services.batch_written_hooks:
            messaging_services.batch_written_hooks.append(services.push_enqueue_batch)
        messaging_services.message_updated.connect(
            receivers.on_message_updated, dispatch_uid="notifications.message_updated"
        )
