from django.apps import AppConfig


class RecordsConfig(AppConfig):
    name = "records"
    verbose_name = "Clinical record"

    def ready(self) -> None:
        from accounts import services as account_services
        from messaging import protocol as messaging_protocol

        from . import account_data, frames

        messaging_protocol.register_frames(server=frames.SERVER_FRAME_MODELS)
        account_services.register_export_section("records", account_data.export_user_records)
        account_services.register_eraser("records", account_data.erase_user_records)
