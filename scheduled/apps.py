from django.apps import AppConfig


class ScheduledConfig(AppConfig):
    name = "scheduled"
    verbose_name = "Scheduled messages"

    def ready(self) -> None:
        from accounts import services as account_services
        from messaging import protocol as messaging_protocol

        from . import frames, services

        account_services.register_export_section("scheduled_messages", services.export_user_scheduled)
        account_services.register_eraser("scheduled_messages", services.erase_user_scheduled)
        # scheduled_message.updated, registered the one way every app's frames are.
        messaging_protocol.register_frames(server=frames.SERVER_FRAME_MODELS)
