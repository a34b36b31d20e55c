from django.apps import AppConfig


class RatingsConfig(AppConfig):
    name = "ratings"
    verbose_name = "Ratings"

    def ready(self) -> None:
        from accounts import services as account_services

        from . import services

        account_services.register_export_section("ratings", services.export_user_ratings)
        account_services.register_eraser("ratings", services.erase_user_ratings)
