"""Blocks hide receipts in the REST member lists too (trust finding 9; the live paths are in
``test_relationships_live.py``)."""

from __future__ import annotations

import pytest

from accounts.tests.factories import DoctorFactory, PatientFactory
from groups import services as group_services
from messaging import services

pytestmark = pytest.mark.django_db


def test_member_lists_show_no_cursors_of_a_block_partner(api):
    doctor, patient, colleague = DoctorFactory(), PatientFactory(), DoctorFactory()
    services.conversation_open_direct(user=patient, peer_id=doctor.pk)
    group = group_services.group_create(creator=doctor, name="Team", member_ids=[colleague.pk, patient.pk])
    services.receipt_mark(user=patient, conversation_id=group.pk, seq=group.last_seq, kind="read")
    services.block_user(user=doctor, blocked_id=patient.pk)

    def cursors(viewer):
        members = api(viewer).get(f"/api/v1/groups/{group.pk}").json()["members"]
        listed = api(viewer).get("/api/v1/conversations").json()["results"]
        in_list = next(c for c in listed if c["id"] == group.pk)["members"]
        assert in_list == members
        return {m["user_id"]: (m["delivered_seq"], m["read_seq"]) for m in members}

    seen_by_doctor, seen_by_patient, seen_by_colleague = cursors(doctor), cursors(patient), cursors(colleague)
    assert seen_by_doctor[patient.pk] == (None, None)
    assert seen_by_patient[doctor.pk] == (None, None)
    assert seen_by_colleague[patient.pk] == (group.last_seq, group.last_seq)
    assert seen_by_doctor[colleague.pk] == (0, 0)
