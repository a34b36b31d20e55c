"""A small stateful fake of the Stripe API (standard-library HTTP server on 127.0.0.1).

stripe-python talks to it for real (``STRIPE_API_BASE``). It records every request with its
``Idempotency-Key`` header and form-decoded params, honours idempotency keys like Stripe
(same key: the first response is replayed, with ``Idempotent-Replayed: true``), and can
inject 500s before a request takes effect (``fail_next``) or after it took effect with the
response lost (``lose_next``), to prove retries. It implements what healthchat uses:
PaymentIntents (create, retrieve, confirm, capture, cancel, list with ``expand``), refunds,
transfers and reversals, Connect accounts and account links.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    status: int = 0
    replayed: bool = False
    injected: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class StripeFailure(Exception):
    def __init__(self, status: int, code: str, message: str, type_: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.type = status, code, message, type_


def decode_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """``metadata[a]=1&expand[0]=x`` -> ``{"metadata": {"a": "1"}, "expand": ["x"]}``."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def listify(obj: Any) -> Any:
        if isinstance(obj, dict):
            if obj and all(k.isdigit() for k in obj):
                return [listify(obj[k]) for k in sorted(obj, key=int)]
            return {k: listify(v) for k, v in obj.items()}
        return obj

    return listify(root)


class FakeStripe:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.reset()

    # --- lifecycle and test controls -----------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeStripe:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.lock:
            self.objects: dict[str, dict[str, Any]] = {}
            self.requests: list[Recorded] = []
            self.idempotency: dict[str, tuple[str, dict[str, Any], int, dict[str, Any]]] = {}
            self.fail_plan: list[tuple[str, int]] = []  # ("before" | "after", status)
            self.counter = itertools.count(1)

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """The next ``count`` requests fail with ``status`` before taking effect."""
        with self.lock:
            self.fail_plan.extend([("before", status)] * count)

    def lose_next(self, count: int = 1) -> None:
        """The next ``count`` requests take effect, but the client gets a 500 instead."""
        with self.lock:
            self.fail_plan.extend([("after", 500)] * count)

    def calls(self, method: str | None = None, path: str = "") -> list[Recorded]:
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and r.path.startswith(path) and not r.injected
            ]

    def _id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self.counter):06d}"

    # --- what a patient's app and the Stripe dashboard do --------------------------------
    def authorize(self, pi_id: str) -> dict[str, Any]:
        """The patient's app confirms the PaymentIntent with a card that works."""
        return self._confirm(pi_id, {"payment_method": "pm_card_visa"})

    def decline_card(self, pi_id: str) -> dict[str, Any]:
        return self._confirm(pi_id, {"payment_method": "pm_card_chargeDeclined"})

    def refund_in_dashboard(self, pi_id: str, amount: int) -> dict[str, Any]:
        with self.lock:
            return self._refund({"payment_intent": pi_id, "amount": str(amount)})

    def cancel_in_dashboard(self, pi_id: str) -> dict[str, Any]:
        with self.lock:
            return self._pi_cancel(pi_id, {})

    def payment_intent(self, pi_id: str, *, expand_charge: bool = False) -> dict[str, Any]:
        with self.lock:
            pi = copy.deepcopy(self.objects[pi_id])
            if expand_charge and pi.get("latest_charge"):
                pi["latest_charge"] = copy.deepcopy(self.objects[pi["latest_charge"]])
            return pi

    def event(self, type_: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
        """A Stripe event around a snapshot of ``obj``."""
        return {
            "id": event_id or self._id("evt"),
            "object": "event",
            "api_version": "2026-10-28.endive",
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
            "data": {"object": copy.deepcopy(obj)},
        }

    # --- the API ---------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, params: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, Any, bool]:
        key = headers.get("idempotency-key")
        record = Recorded(method, path, params, key, headers=headers)
        with self.lock:
            self.requests.append(record)
            if not headers.get("authorization", "").startswith("Bearer sk_"):
                record.status = 401
                return 401, _error("authentication_error", "", "Invalid API Key provided."), False
            plan = self.fail_plan.pop(0) if self.fail_plan else None
            if plan and plan[0] == "before":
                record.status, record.injected = plan[1], True
                return plan[1], _error("api_error", "", "Injected failure."), False
            if method == "POST" and key and key in self.idempotency:
                old_method_path, old_params, status, body = self.idempotency[key]
                if old_method_path != f"{method} {path}" or old_params != params:
                    record.status = 400
                    return (
                        400,
                        _error(
                            "idempotency_error",
                            "",
                            "Keys for idempotent requests can only be used with the same parameters.",
                        ),
                        False,
                    )
                record.status, record.replayed = status, True
                return status, body, True
            try:
                status, body = 200, self._route(method, path, params)
            except StripeFailure as exc:
                status, body = exc.status, _error(exc.type, exc.code, exc.message)
            if method == "POST" and key:
                self.idempotency[key] = (f"{method} {path}", params, status, copy.deepcopy(body))
            record.status = status
            if plan and plan[0] == "after":
                record.status, record.injected = 500, True
                return 500, _error("api_error", "", "Injected failure after the effect."), False
            return status, body, False

    def _route(self, method: str, path: str, params: dict[str, Any]) -> Any:
        parts = path.strip("/").split("/")[1:]  # drop "v1"
        match (method, parts):
            case ("POST", ["payment_intents"]):
                return self._pi_create(params)
            case ("GET", ["payment_intents"]):
                return self._pi_list(params)
            case ("GET", ["payment_intents", pi_id]):
                return self._expand(self._get(pi_id, "payment_intent"), params, "")
            case ("POST", ["payment_intents", pi_id, "confirm"]):
                return self._confirm(pi_id, params)
            case ("POST", ["payment_intents", pi_id, "capture"]):
                return self._pi_capture(pi_id, params)
            case ("POST", ["payment_intents", pi_id, "cancel"]):
                return self._pi_cancel(pi_id, params)
            case ("POST", ["refunds"]):
                return self._refund(params)
            case ("POST", ["transfers"]):
                return self._transfer(params)
            case ("POST", ["transfers", tr_id, "reversals"]):
                return self._reversal(tr_id, params)
            case ("POST", ["accounts"]):
                return self._account_create(params)
            case ("GET", ["accounts", acct_id]):
                return copy.deepcopy(self._get(acct_id, "account"))
            case ("POST", ["account_links"]):
                return self._account_link(params)
        raise StripeFailure(404, "resource_missing", f"Unrecognized request URL ({method}: {path}).")

    def _get(self, obj_id: str, kind: str) -> dict[str, Any]:
        obj = self.objects.get(obj_id)
        if obj is None or obj["object"] != kind:
            raise StripeFailure(404, "resource_missing", f"No such {kind}: '{obj_id}'")
        return obj

    def _expand(self, obj: dict[str, Any], params: dict[str, Any], prefix: str) -> dict[str, Any]:
        out = copy.deepcopy(obj)
        if f"{prefix}latest_charge" in (params.get("expand") or []) and out.get("latest_charge"):
            out["latest_charge"] = copy.deepcopy(self.objects[out["latest_charge"]])
        return out

    def _pi_create(self, params: dict[str, Any]) -> dict[str, Any]:
        if "amount" not in params or "currency" not in params:
            raise StripeFailure(400, "parameter_missing", "Missing required param: amount/currency.")
        pi_id = self._id("pi")
        pi = {
            "id": pi_id,
            "object": "payment_intent",
            "amount": int(params["amount"]),
            "amount_capturable": 0,
            "amount_received": 0,
            "currency": params["currency"],
            "capture_method": params.get("capture_method", "automatic_async"),
            "client_secret": f"{pi_id}_secret_{hashlib.sha256(pi_id.encode()).hexdigest()[:12]}",
            "created": int(time.time()),
            "description": params.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": params.get("metadata", {}),
            "status": "requires_payment_method",
            "transfer_group": params.get("transfer_group"),
        }
        self.objects[pi_id] = pi
        return copy.deepcopy(pi)

    def _pi_list(self, params: dict[str, Any]) -> dict[str, Any]:
        gte = int((params.get("created") or {}).get("gte", 0))
        limit = int(params.get("limit", 10))
        items = sorted(
            (o for o in self.objects.values() if o["object"] == "payment_intent" and o["created"] >= gte),
            key=lambda o: o["id"],
            reverse=True,
        )
        after = params.get("starting_after")
        if after:
            ids = [o["id"] for o in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[:limit]
        return {
            "object": "list",
            "url": "/v1/payment_intents",
            "has_more": len(items) > limit,
            "data": [self._expand(o, params, "data.") for o in page],
        }

    def _confirm(self, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            pi = self._get(pi_id, "payment_intent")
            if pi["status"] not in ("requires_payment_method", "requires_confirmation"):
                raise StripeFailure(
                    400, "payment_intent_unexpected_state", "Cannot confirm this PaymentIntent."
                )
            if params.get("payment_method") == "pm_card_chargeDeclined":
                pi["status"] = "requires_payment_method"
                pi["last_payment_error"] = {"code": "card_declined", "message": "Your card was declined."}
            else:
                pi["last_payment_error"] = None
                if pi["capture_method"] == "manual":
                    pi["status"], pi["amount_capturable"] = "requires_capture", pi["amount"]
                else:
                    self._charge(pi, pi["amount"])
            return copy.deepcopy(pi)

    def _charge(self, pi: dict[str, Any], amount: int) -> None:
        charge_id = self._id("ch")
        self.objects[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": pi["amount"],
            "amount_captured": amount,
            "amount_refunded": 0,
            "captured": True,
            "currency": pi["currency"],
            "metadata": copy.deepcopy(pi["metadata"]),
            "payment_intent": pi["id"],
            "refunded": False,
            "status": "succeeded",
        }
        pi.update(status="succeeded", amount_received=amount, amount_capturable=0, latest_charge=charge_id)

    def _pi_capture(self, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
        pi = self._get(pi_id, "payment_intent")
        if pi["status"] != "requires_capture":
            raise StripeFailure(
                400,
                "payment_intent_unexpected_state",
                f"This PaymentIntent could not be captured ({pi['status']}).",
            )
        amount = int(params.get("amount_to_capture", pi["amount_capturable"]))
        if amount > pi["amount_capturable"]:
            raise StripeFailure(
                400, "amount_too_large", "amount_to_capture is larger than amount_capturable."
            )
        self._charge(pi, amount)
        return copy.deepcopy(pi)

    def _pi_cancel(self, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
        pi = self._get(pi_id, "payment_intent")
        if pi["status"] not in (
            "requires_payment_method",
            "requires_confirmation",
            "requires_action",
            "requires_capture",
        ):
            raise StripeFailure(
                400,
                "payment_intent_unexpected_state",
                f"You cannot cancel this PaymentIntent ({pi['status']}).",
            )
        pi.update(
            status="canceled", amount_capturable=0, cancellation_reason=params.get("cancellation_reason")
        )
        return copy.deepcopy(pi)

    def _refund(self, params: dict[str, Any]) -> dict[str, Any]:
        pi = self._get(str(params.get("payment_intent")), "payment_intent")
        if pi["status"] != "succeeded":
            raise StripeFailure(
                400, "charge_not_captured", "This PaymentIntent has no captured charge to refund."
            )
        charge = self.objects[pi["latest_charge"]]
        left = charge["amount_captured"] - charge["amount_refunded"]
        amount = int(params.get("amount", left))
        if amount <= 0 or amount > left:
            raise StripeFailure(
                400, "amount_too_large", f"Refund amount ({amount}) is greater than unrefunded ({left})."
            )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount_captured"]
        refund_id = self._id("re")
        refund = {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "currency": charge["currency"],
            "metadata": params.get("metadata", {}),
            "payment_intent": pi["id"],
            "status": "succeeded",
        }
        self.objects[refund_id] = refund
        return copy.deepcopy(refund)

    def _transfer(self, params: dict[str, Any]) -> dict[str, Any]:
        self._get(str(params.get("destination")), "account")
        source = params.get("source_transaction")
        if source:
            self._get(source, "charge")
        transfer_id = self._id("tr")
        transfer = {
            "id": transfer_id,
            "object": "transfer",
            "amount": int(params["amount"]),
            "amount_reversed": 0,
            "currency": params["currency"],
            "destination": params["destination"],
            "metadata": params.get("metadata", {}),
            "reversed": False,
            "source_transaction": source,
            "transfer_group": params.get("transfer_group"),
        }
        self.objects[transfer_id] = transfer
        return copy.deepcopy(transfer)

    def _reversal(self, transfer_id: str, params: dict[str, Any]) -> dict[str, Any]:
        transfer = self._get(transfer_id, "transfer")
        left = transfer["amount"] - transfer["amount_reversed"]
        amount = int(params.get("amount", left))
        if amount <= 0 or amount > left:
            raise StripeFailure(400, "amount_too_large", "Reversal amount is larger than what is left.")
        transfer["amount_reversed"] += amount
        transfer["reversed"] = transfer["amount_reversed"] == transfer["amount"]
        reversal_id = self._id("trr")
        reversal = {
            "id": reversal_id,
            "object": "transfer_reversal",
            "amount": amount,
            "transfer": transfer_id,
        }
        self.objects[reversal_id] = reversal
        return copy.deepcopy(reversal)

    def _account_create(self, params: dict[str, Any]) -> dict[str, Any]:
        acct_id = self._id("acct")
        account = {
            "id": acct_id,
            "object": "account",
            "type": params.get("type"),
            "country": params.get("country"),
            "charges_enabled": False,
            "payouts_enabled": False,
            "details_submitted": False,
            "metadata": params.get("metadata", {}),
        }
        self.objects[acct_id] = account
        return copy.deepcopy(account)

    def enable_account(self, acct_id: str) -> dict[str, Any]:
        """The doctor finished onboarding."""
        with self.lock:
            account = self._get(acct_id, "account")
            account.update(charges_enabled=True, payouts_enabled=True, details_submitted=True)
            return copy.deepcopy(account)

    def _account_link(self, params: dict[str, Any]) -> dict[str, Any]:
        self._get(str(params.get("account")), "account")
        return {
            "object": "account_link",
            "created": int(time.time()),
            "expires_at": int(time.time()) + 300,
            "url": f"https://connect.stripe.com/setup/e/{params['account']}/{self._id('link')}",
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self, method: str) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                pairs = parse_qsl(split.query, keep_blank_values=True) + parse_qsl(
                    body, keep_blank_values=True
                )
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, replayed = fake.handle(method, split.path, decode_form(pairs), headers)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", f"req_fake{time.time_ns()}")
                if replayed:
                    self.send_header("Idempotent-Replayed", "true")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _error(type_: str, code: str, message: str) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type_, "message": message}
    if code:
        body["code"] = code
    return {"error": body}


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header computed as Stripe does: HMAC-SHA256 over ``t.payload``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"
