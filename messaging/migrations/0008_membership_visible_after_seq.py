"""Fix in each membership row the lower bound of what its member may read (trust finding 5).

Until now the bound was computed at read time from the group's current
``history_visible_to_new_members``, so changing the setting changed what members already in (or
removed) could read. Existing rows are backfilled with what they can see today: 0 where the
group shares its history, else ``joined_seq``.
"""

from django.db import migrations, models
from django.db.models import F


def backfill(apps, schema_editor):
    Membership = apps.get_model("messaging", "Membership")
    Membership.objects.filter(conversation__history_visible_to_new_members=False).update(
        visible_after_seq=F("joined_seq")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0007_legal_hold_permission"),
    ]

    operations = [
        migrations.AddField(
            model_name="membership",
            name="visible_after_seq",
            field=models.BigIntegerField(db_default=0, default=0),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop, elidable=False),
        migrations.AddConstraint(
            model_name="membership",
            constraint=models.CheckConstraint(
                condition=models.Q(("visible_after_seq__gte", 0), ("visible_after_seq__lte", models.F("joined_seq"))),
                name="membership_visible_after_within_join",
            ),
        ),
    ]
