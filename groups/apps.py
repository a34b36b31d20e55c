from django.apps import AppConfig


class GroupsConfig(AppConfig):
    name = "groups"
    verbose_name = "Groups"

    def ready(self) -> None:
        from accounts import services as account_services

        from . import services

        # Erasure ends every group membership the way leaving does (ownership handed over).
        account_services.register_eraser("groups", services.erase_user_groups)
