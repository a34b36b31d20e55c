from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        from core.signals import api_refused

        from .receivers import record_api_refusal

        api_refused.connect(record_api_refusal, dispatch_uid="audit.record_api_refusal")
