from django.apps import AppConfig


class DocumentsConfig(AppConfig):
    name = "documents"
    verbose_name = "Documents (PDF)"

    def ready(self) -> None:
        from accounts import services as account_services
        from payments.signals import ledger_entry_posted

        from . import services

        account_services.register_export_section("documents", services.export_user_documents)
        account_services.register_eraser("documents", services.erase_user_documents)
        # A receipt for every payment and refund, in the transaction that recorded it.
        ledger_entry_posted.connect(receipt_on_ledger_entry, dispatch_uid="documents.receipts")


def receipt_on_ledger_entry(sender: object, entry: object, **kwargs: object) -> None:
    from payments.models import LedgerEntry

    from . import services

    assert isinstance(entry, LedgerEntry)
    services.receipt_for_entry(entry=entry)
