from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "Messaging"

    def ready(self) -> None:
        from accounts import keys as account_keys
        from accounts import services as account_services

        from . import services
        from .send_rules import registry

        # Messaging's own send checks, registered the way any app's rule is (first: they answer first).
        for check in services.SEND_CHECKS:
            registry.register_check(check)
        # Mentions ride the send path: a check after messaging's own (the send statement writes
        # their rows).
        registry.register_check(services.MENTIONS_ARE_MEMBERS)
        from . import annotation_frames, annotation_handlers, handlers, protocol

        protocol.register_frames(
            client=annotation_frames.CLIENT_FRAME_MODELS,
            server=annotation_frames.SERVER_FRAME_MODELS,
            acks=annotation_frames.ACK_MODELS,
            error_codes=annotation_frames.ERROR_CODES,
        )
        handlers.register(annotation_handlers.HANDLERS)
        account_services.register_eraser("messages", services.erase_user_messages)
        account_services.register_eraser("presence", services.erase_user_presence)
        account_services.register_export_section("messaging", services.export_user_messages)
        account_services.register_export_section("uploads", services.export_user_uploads)
        account_services.register_export_section("reactions", services.export_user_reactions)
        account_services.register_export_section("mentions", services.export_user_mentions)
        account_services.register_export_section("pins", services.export_user_pins)
        account_keys.register_key_access_rule("messaging.shared_conversation", services.may_fetch_keys)
        account_keys.register_device_keys_listener("messaging.key_events", services.device_keys_event_record)
