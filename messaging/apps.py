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
        account_services.register_eraser("messages", services.erase_user_messages)
        account_services.register_eraser("presence", services.erase_user_presence)
        account_services.register_export_section("messaging", services.export_user_messages)
        account_services.register_export_section("uploads", services.export_user_uploads)
        account_keys.register_key_access_rule("messaging.shared_conversation", services.may_fetch_keys)
        account_keys.register_device_keys_listener("messaging.key_events", services.device_keys_event_record)
