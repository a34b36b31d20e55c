from typing import Any

from django.db import migrations

SPECIALTIES = [
    ("general-practice", "General practice"),
    ("paediatrics", "Paediatrics"),
    ("cardiology", "Cardiology"),
    ("dermatology", "Dermatology"),
    ("gynaecology", "Gynaecology and obstetrics"),
    ("psychiatry", "Psychiatry"),
    ("internal-medicine", "Internal medicine"),
    ("endocrinology", "Endocrinology"),
    ("neurology", "Neurology"),
    ("orthopaedics", "Orthopaedics"),
]


def seed(apps: Any, schema_editor: Any) -> None:
    specialty = apps.get_model("accounts", "Specialty")
    for slug, name in SPECIALTIES:
        specialty.objects.get_or_create(slug=slug, defaults={"name": name})


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
