"""The clinical record is append-only (docs/record.md "Immutability"): on PostgreSQL triggers
refuse what the services never do.

- ``records_visitnote``: a signed note is never deleted, and never updated except once, to set
  ``shared_at`` (the doctor shares it) with every other column unchanged. Drafts are free.
- ``records_noteamendment``: no UPDATE, no DELETE, ever.
- ``records_prescription``: no DELETE; the only UPDATE is the cancellation of an issued
  prescription (``status`` to cancelled with ``cancelled_at``, ``cancelled_by_id``,
  ``cancel_reason``), every clinical column unchanged; a cancelled one never changes again.

As for the audit log, TRUNCATE is not caught (row triggers do not fire; the test runner empties
tables with it): production grants the application role no TRUNCATE (docs/trust.md). SQLite (the
embedded development setup) migrates without the triggers.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION records_visit_note_immutable() RETURNS trigger AS $$
BEGIN
    IF OLD.state <> 'signed' THEN
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE'
        AND OLD.shared_at IS NULL
        AND NEW.shared_at IS NOT NULL
        AND (to_jsonb(NEW) - 'shared_at') = (to_jsonb(OLD) - 'shared_at') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING
        MESSAGE = 'records_visitnote: a signed note is append-only (' || TG_OP || ' refused)',
        ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER records_visit_note_immutable
    BEFORE UPDATE OR DELETE ON records_visitnote
    FOR EACH ROW EXECUTE FUNCTION records_visit_note_immutable();

CREATE OR REPLACE FUNCTION records_note_amendment_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION USING
        MESSAGE = 'records_noteamendment is append-only (' || TG_OP || ' refused)',
        ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER records_note_amendment_append_only
    BEFORE UPDATE OR DELETE ON records_noteamendment
    FOR EACH ROW EXECUTE FUNCTION records_note_amendment_append_only();

CREATE OR REPLACE FUNCTION records_prescription_immutable() RETURNS trigger AS $$
DECLARE
    cancel_columns text[] := ARRAY['status', 'cancelled_at', 'cancelled_by_id', 'cancel_reason'];
BEGIN
    IF TG_OP = 'UPDATE'
        AND OLD.status = 'issued'
        AND NEW.status = 'cancelled'
        AND (to_jsonb(NEW) - cancel_columns) = (to_jsonb(OLD) - cancel_columns) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION USING
        MESSAGE = 'records_prescription is append-only: only its cancellation is allowed ('
            || TG_OP || ' refused)',
        ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER records_prescription_immutable
    BEFORE UPDATE OR DELETE ON records_prescription
    FOR EACH ROW EXECUTE FUNCTION records_prescription_immutable();
"""
DROP = """
DROP TRIGGER IF EXISTS records_visit_note_immutable ON records_visitnote;
DROP FUNCTION IF EXISTS records_visit_note_immutable();
DROP TRIGGER IF EXISTS records_note_amendment_append_only ON records_noteamendment;
DROP FUNCTION IF EXISTS records_note_amendment_append_only();
DROP TRIGGER IF EXISTS records_prescription_immutable ON records_prescription;
DROP FUNCTION IF EXISTS records_prescription_immutable();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):
    dependencies = [("records", "0001_visit_notes_and_prescriptions")]

    operations = [migrations.RunPython(forwards, backwards)]
