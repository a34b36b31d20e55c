"""The end-to-end encryption key directory: a device's identity key, signed prekeys and one-time
prekeys (uploaded, checked, rotated), and the bundles others take to start a session with it.

Who may fetch whose bundles, and how a device's key change reaches the people who talk to its
owner, is decided by the messaging app (registered in its AppConfig.ready)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from core.errors import ApplicationError, NotFound, PermissionDenied
from core.realtime import publish_on_commit, user_group
from core.registry import Registry

from . import prekey_budget, selectors, xeddsa
from . import validators as v
from .models import (
    Device,
    DeviceIdentity,
    KyberPreKey,
    OneTimePreKey,
    SignedPreKey,
    User,
)

logger = logging.getLogger("healthchat.accounts")

# --- End-to-end encryption: the key directory ---------------------------------------------
# Who may fetch whose prekey bundles, and how a device's key change reaches the people who talk
# to its owner, is decided by the messaging app (conversations and contact rules; the replayable
# event log), registered in its AppConfig.ready.
KeyAccessRule = Callable[[User, User], bool]
# ``fn(user=, device_id=, kind=)``, called inside the upload's transaction; ``kind`` is
# ``identity.changed`` (a new identity key) or ``device.added`` (a device's first keys).
DeviceKeysListener = Callable[..., None]
key_access_rules: Registry[KeyAccessRule] = Registry("key access rule")
device_keys_listeners: Registry[DeviceKeysListener] = Registry("device keys listener")


def register_key_access_rule(name: str, fn: KeyAccessRule) -> None:
    """``fn(requester, owner)`` is True when ``requester`` may fetch ``owner``'s bundles."""
    key_access_rules.register(name, fn)


def register_device_keys_listener(name: str, fn: DeviceKeysListener) -> None:
    """``fn`` records (and announces) a device's new identity key or first keys."""
    device_keys_listeners.register(name, fn)


@dataclass(frozen=True)
class _SignedKey:
    key_id: int
    public_key: bytes
    signature: bytes


@dataclass(frozen=True)
class _OneTimeKey:
    key_id: int
    public_key: bytes


def _signed(data: Any, *, field: str, kyber: bool, identity_key: bytes) -> _SignedKey:
    if not isinstance(data, dict) or set(data) - {"id", "public_key", "signature"}:
        raise ApplicationError(
            "invalid_key",
            f"{field} must be {{id, public_key, signature}}.",
            status=422,
            fields={field: ["invalid"]},
        )
    key_id = v.validate_key_id(data.get("id"), field=f"{field}.id")
    validate = v.validate_kyber_public_key if kyber else v.validate_ec_public_key
    public_key = validate(data.get("public_key"), field=f"{field}.public_key")
    signature = v.validate_signature(data.get("signature"), field=f"{field}.signature")
    if not xeddsa.verify(identity_key, public_key, signature):
        raise ApplicationError(
            "invalid_signature",
            f"{field}.signature is not the identity key's signature of this public key.",
            status=422,
            fields={f"{field}.signature": ["invalid"]},
        )
    return _SignedKey(key_id, public_key, signature)


def _key_list(items: Any, *, field: str) -> list[Any]:
    if items is None:
        return []
    limit = int(settings.HEALTHCHAT_PREKEY_MAX_UPLOAD)
    if not isinstance(items, list) or len(items) > limit:
        raise ApplicationError(
            "invalid_key",
            f"{field} must be a list of at most {limit} keys.",
            status=422,
            fields={field: ["invalid"]},
        )
    ids = [item.get("id") if isinstance(item, dict) else None for item in items]
    if len(set(map(repr, ids))) != len(ids):
        raise ApplicationError(
            "invalid_key", f"{field} has duplicate ids.", status=422, fields={field: ["duplicate"]}
        )
    return items


def _one_time(data: Any, *, field: str) -> _OneTimeKey:
    if not isinstance(data, dict) or set(data) - {"id", "public_key"}:
        raise ApplicationError(
            "invalid_key", f"{field} must be {{id, public_key}}.", status=422, fields={field: ["invalid"]}
        )
    return _OneTimeKey(
        v.validate_key_id(data.get("id"), field=f"{field}.id"),
        v.validate_ec_public_key(data.get("public_key"), field=f"{field}.public_key"),
    )


def _prekey_conflict(field: str) -> ApplicationError:
    return ApplicationError(
        "prekey_conflict",
        f"A {field} with this id but another key is already uploaded; use new ids.",
        status=409,
        fields={field: ["conflict"]},
    )


def _add_keys(model: Any, device: Device, keys: list[Any], *, field: str) -> None:
    """Add keys, skipping ones already held (same id, same key): uploads are idempotent."""
    if not keys:
        return
    held = {
        int(key_id): bytes(public_key)
        for key_id, public_key in model.objects.filter(
            device=device, key_id__in=[k.key_id for k in keys]
        ).values_list("key_id", "public_key")
    }
    for key in keys:
        if key.key_id in held and held[key.key_id] != key.public_key:
            raise _prekey_conflict(field)
    fresh = [k for k in keys if k.key_id not in held]
    stock = model.objects.filter(device=device)
    if model is KyberPreKey:
        stock = stock.filter(last_resort=False)
    if stock.count() + len(fresh) > int(settings.HEALTHCHAT_PREKEY_MAX_STOCK):
        raise ApplicationError(
            "too_many_prekeys",
            f"A device may hold at most {settings.HEALTHCHAT_PREKEY_MAX_STOCK} {field}.",
            status=422,
        )
    if model is KyberPreKey:
        KyberPreKey.objects.bulk_create(
            [
                KyberPreKey(device=device, key_id=k.key_id, public_key=k.public_key, signature=k.signature)
                for k in fresh
            ]
        )
    else:
        OneTimePreKey.objects.bulk_create(
            [OneTimePreKey(device=device, key_id=k.key_id, public_key=k.public_key) for k in fresh]
        )


def device_keys_put(
    *,
    user: User,
    device_id: int,
    registration_id: int,
    identity_key: str,
    signed_prekey: dict[str, Any] | None = None,
    one_time_prekeys: list[dict[str, Any]] | None = None,
    kyber_prekeys: list[dict[str, Any]] | None = None,
    last_resort_kyber_prekey: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Upload or refill the public keys of one of the caller's own devices (idempotent).

    Every signed key (signed prekey, Kyber prekeys) must carry the identity key's XEdDSA
    signature (422 ``invalid_signature``). A device's first upload, and an upload with a new
    identity key (a reinstall), must include the signed prekey and the last-resort Kyber
    prekey; a new identity key drops every key the device held. The first upload
    (``device.added``) and a new identity key (``identity.changed``) are recorded by the
    registered listeners (messaging: in the event log of each of the user's conversations, so
    ``sync`` replays them). Lists are added to what the server holds.
    """
    registration = v.validate_registration_id(registration_id)
    identity = v.validate_ec_public_key(identity_key, field="identity_key")
    signed = (
        _signed(signed_prekey, field="signed_prekey", kyber=False, identity_key=identity)
        if (signed_prekey is not None)
        else None
    )
    last_resort = (
        _signed(last_resort_kyber_prekey, field="last_resort_kyber_prekey", kyber=True, identity_key=identity)
        if last_resort_kyber_prekey is not None
        else None
    )
    one_time = [
        _one_time(item, field=f"one_time_prekeys[{i}]")
        for i, item in enumerate(_key_list(one_time_prekeys, field="one_time_prekeys"))
    ]
    kyber = [
        _signed(item, field=f"kyber_prekeys[{i}]", kyber=True, identity_key=identity)
        for i, item in enumerate(_key_list(kyber_prekeys, field="kyber_prekeys"))
    ]
    if last_resort is not None and any(k.key_id == last_resort.key_id for k in kyber):
        raise _prekey_conflict("last_resort_kyber_prekey")
    changed = False
    with transaction.atomic():
        device = Device.objects.select_for_update().filter(pk=device_id, user=user).first()
        if device is None:
            raise ApplicationError("device_not_found", "No such device of yours.", status=404)
        current = DeviceIdentity.objects.filter(device=device).first()
        if current is not None and bytes(current.identity_key) != identity:
            # A new identity (reinstall, or keys reset): the old prekeys belong to the old one.
            changed = True
            SignedPreKey.objects.filter(device=device).delete()
            OneTimePreKey.objects.filter(device=device).delete()
            KyberPreKey.objects.filter(device=device).delete()
        if (current is None or changed) and (signed is None or last_resort is None):
            raise ApplicationError(
                "keys_incomplete",
                "A device's first upload (and one with a new identity key) needs signed_prekey and "
                "last_resort_kyber_prekey.",
                status=422,
            )
        DeviceIdentity.objects.update_or_create(
            device=device, defaults={"registration_id": registration, "identity_key": identity}
        )
        if signed is not None:
            SignedPreKey.objects.update_or_create(
                device=device,
                defaults={
                    "key_id": signed.key_id,
                    "public_key": signed.public_key,
                    "signature": signed.signature,
                },
            )
        if last_resort is not None:
            existing = KyberPreKey.objects.filter(device=device, last_resort=True).first()
            if existing is None or (existing.key_id, bytes(existing.public_key)) != (
                last_resort.key_id,
                last_resort.public_key,
            ):
                KyberPreKey.objects.filter(device=device, last_resort=True).delete()
                if KyberPreKey.objects.filter(device=device, key_id=last_resort.key_id).exists():
                    raise _prekey_conflict("last_resort_kyber_prekey")
                KyberPreKey.objects.create(
                    device=device,
                    key_id=last_resort.key_id,
                    public_key=last_resort.public_key,
                    signature=last_resort.signature,
                    last_resort=True,
                )
        _add_keys(OneTimePreKey, device, one_time, field="one_time_prekeys")
        _add_keys(KyberPreKey, device, kyber, field="kyber_prekeys")
        counts = selectors.prekey_counts(device_ids=[device.pk])[device.pk]
        if changed or current is None:
            kind = "identity.changed" if changed else "device.added"
            for listener in device_keys_listeners:
                listener(user=user, device_id=device.pk, kind=kind)
    if changed:
        logger.info("device %s of user %s has a new identity key", device_id, user.pk)
    return {"device_id": device_id, **counts, "identity_changed": changed}


def _check_key_access(requester: User, owner_id: int) -> User:
    missing = NotFound("No such user.", code="user_not_found")
    owner = User.objects.filter(pk=owner_id, is_active=True, deleted_at__isnull=True).first()
    if owner is None:
        raise missing
    if owner.pk == requester.pk:
        return owner
    if not any(rule(requester, owner) for rule in key_access_rules):
        raise PermissionDenied("You may not fetch this user's keys.", code="keys_not_allowed")
    return owner


_TAKE_ONE_TIME_SQL = """
DELETE FROM {table} WHERE id IN (
    SELECT k.id FROM unnest(%s::bigint[]) AS d(id)
    CROSS JOIN LATERAL (
        SELECT id FROM {table} WHERE device_id = d.id {extra}
        ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED
    ) AS k
) RETURNING device_id, key_id, public_key{signature}
"""


def _take_one_per_device(model: Any, device_ids: list[int]) -> dict[int, Any]:
    """Remove and return one one-time key per device, never the same key twice: concurrent
    fetches skip the rows another transaction has locked (PostgreSQL), or retry (others)."""
    kyber = model is KyberPreKey
    if not device_ids:
        return {}
    if connection.vendor == "postgresql":
        sql = _TAKE_ONE_TIME_SQL.format(
            table=model._meta.db_table,
            extra="AND NOT last_resort" if kyber else "",
            signature=", signature" if kyber else "",
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [device_ids])
            rows = cursor.fetchall()
        return {int(row[0]): row[1:] for row in rows}
    taken: dict[int, Any] = {}
    for device_id in device_ids:
        qs = model.objects.filter(device_id=device_id)
        if kyber:
            qs = qs.filter(last_resort=False)
        for _attempt in range(5):
            row = qs.order_by("key_id").first()
            if row is None:
                break
            if model.objects.filter(pk=row.pk).delete()[0]:
                extra = (bytes(row.signature),) if isinstance(row, KyberPreKey) else ()
                taken[device_id] = (row.key_id, bytes(row.public_key), *extra)
                break
    return taken


def _b64(raw: bytes | memoryview) -> str:
    return base64.b64encode(bytes(raw)).decode("ascii")


def key_bundles_take(*, requester: User, user_id: int, device_id: int | None = None) -> dict[str, Any]:
    """One prekey bundle per device of ``user_id`` (or of one device), each consuming exactly one
    one-time prekey and one one-time Kyber prekey when there are any and the requester is within
    its prekey budgets (``prekey_budget``; the owner's own devices are not budgeted); otherwise
    the bundle has ``one_time_prekey: null`` and the last-resort Kyber key. Devices left low get
    ``keys.low``."""
    owner = _check_key_access(requester, user_id)
    identities = list(
        DeviceIdentity.objects.select_related("device__signed_prekey")
        .filter(device__user=owner, device__signed_prekey__isnull=False)
        .order_by("device_id")
    )
    if device_id is not None:
        identities = [i for i in identities if i.device_id == device_id]
        if not identities:
            raise NotFound("No keys for this device.", code="device_not_found")
    ids = [i.device_id for i in identities]
    threshold = int(settings.HEALTHCHAT_PREKEY_LOW_THRESHOLD)
    budgeted = bool(ids) and (
        owner.pk == requester.pk or prekey_budget.grant(requester_id=requester.pk, target_id=owner.pk)
    )
    with transaction.atomic():
        one_time = _take_one_per_device(OneTimePreKey, ids) if budgeted else {}
        kyber = _take_one_per_device(KyberPreKey, ids) if budgeted else {}
        short = [d for d in ids if d not in kyber]
        for row in KyberPreKey.objects.filter(device_id__in=short, last_resort=True):
            kyber[row.device_id] = (row.key_id, bytes(row.public_key), bytes(row.signature), True)
        counts = selectors.prekey_counts(device_ids=ids) if budgeted else {}
        for d, stock in counts.items():
            if min(stock["one_time_prekeys"], stock["kyber_prekeys"]) < threshold:
                frame = {"type": "keys.low", "data": {"device_id": d, **stock, "threshold": threshold}}
                publish_on_commit(
                    user_group(owner.pk), {"type": "client.event", "frame": frame, "device_id": d}
                )
    devices = []
    for identity in identities:
        signed = identity.device.signed_prekey
        otk = one_time.get(identity.device_id)
        kyb = kyber.get(identity.device_id)
        devices.append(
            {
                "device_id": identity.device_id,
                "registration_id": identity.registration_id,
                "identity_key": _b64(identity.identity_key),
                "signed_prekey": {
                    "id": signed.key_id,
                    "public_key": _b64(signed.public_key),
                    "signature": _b64(signed.signature),
                },
                "one_time_prekey": {"id": otk[0], "public_key": _b64(otk[1])} if otk else None,
                "kyber_prekey": {
                    "id": kyb[0],
                    "public_key": _b64(kyb[1]),
                    "signature": _b64(kyb[2]),
                    "last_resort": len(kyb) > 3,
                }
                if kyb
                else None,
            }
        )
    return {"user_id": owner.pk, "devices": devices}
