from django.apps import AppConfig


class CallsConfig(AppConfig):
    name = "calls"
    verbose_name = "Calls"

    def ready(self) -> None:
        from accounts import services as account_services
        from messaging import handlers as messaging_handlers
        from messaging import protocol as messaging_protocol

        from . import frames, handlers, protocol, services

        account_services.register_export_section("calls", services.export_user_calls)

        # The call frames and their handlers, registered the one way every app's frames are.
        messaging_protocol.register_frames(
            client=protocol.CLIENT_FRAME_MODELS,
            server=frames.SERVER_FRAME_MODELS,
            acks=frames.ACK_MODELS,
            error_codes=protocol.ERROR_CODES,
        )
        messaging_handlers.register(handlers.HANDLERS, on_disconnect=handlers.socket_closed)
