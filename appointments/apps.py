from django.apps import AppConfig


class AppointmentsConfig(AppConfig):
    name = "appointments"
    verbose_name = "Appointments"

    def ready(self) -> None:
        from accounts import services as account_services
        from messaging import handlers as messaging_handlers
        from messaging import protocol as messaging_protocol
        from payments.signals import consultation_transitioned

        from . import account_data, frames, handlers, protocol, services

        messaging_protocol.register_frames(
            client=protocol.CLIENT_FRAME_MODELS,
            server=frames.SERVER_FRAME_MODELS,
            acks=frames.ACK_MODELS,
            error_codes=protocol.ERROR_CODES,
        )
        messaging_handlers.register(handlers.HANDLERS)
        account_services.register_export_section("appointments", account_data.export_user_appointments)
        account_services.register_eraser("appointments", account_data.erase_user_appointments)

        consultation_transitioned.connect(
            services.on_consultation_transitioned, dispatch_uid="appointments.consultation"
        )
