from django.apps import AppConfig


class AppointmentsConfig(AppConfig):
    name = "appointments"
    verbose_name = "Appointments"

    def ready(self) -> None:
        from messaging import protocol as messaging_protocol
        from payments.signals import consultation_transitioned

        from . import frames, services

        messaging_protocol.register_frames(server=frames.SERVER_FRAME_MODELS)

        consultation_transitioned.connect(
            services.on_consultation_transitioned, dispatch_uid="appointments.consultation"
        )
