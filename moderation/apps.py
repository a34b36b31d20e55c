from django.apps import AppConfig


class ModerationConfig(AppConfig):
    name = "moderation"
    verbose_name = "Moderation"

    def ready(self) -> None:
        from accounts import services as account_services
        from messaging import protocol as messaging_protocol
        from messaging.send_rules import registry

        from . import frames, send_checks, services

        # After messaging's own checks (MessagingConfig.ready runs first): a muted sender's send
        # is refused on every writer (``sender_muted``), and so is an edit.
        registry.register_check(send_checks.SENDER_NOT_MUTED)
        messaging_protocol.register_frames(server=frames.SERVER_FRAME_MODELS, error_codes=frames.ERROR_CODES)
        account_services.register_export_section("moderation", services.export_user_moderation)
        account_services.register_eraser("moderation", services.erase_user_moderation)
