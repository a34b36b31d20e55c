from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "payments"
    verbose_name = "Payments"

    def ready(self) -> None:
        from accounts import services as account_services
        from messaging import protocol as messaging_protocol
        from messaging import services as messaging_services
        from messaging.send_rules import registry

        from . import booking, frames, selectors

        account_services.register_export_section("consultations", booking.export_user_consultations)
        account_services.register_eraser("consultations", booking.erase_user_consultations)
        messaging_services.contact_rules.register("payments.consultation", selectors.has_consultation)
        # The closed rule, asked by every path that puts a patient's content in front of others.
        registry.register_rule(selectors.CONSULTATION_CLOSED_RULE)
        # A scheduled message is refused once the consultation it was written in has ended.
        registry.register_deferred(selectors.CONSULTATION_DEFERRED_RULE)
        # consultation.updated, registered the one way every app's frames are.
        messaging_protocol.register_frames(server=frames.SERVER_FRAME_MODELS)
