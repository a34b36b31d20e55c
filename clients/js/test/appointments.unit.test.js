// The appointments module's logic without a server (run with tests/test_sdk_appointments_live.py,
// or alone: node --test test/appointments.unit.test.js): dates in a zone, the slot query, the
// .ics URL, the store's merge of frames and details, waitFor, and book()'s payment paths.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  AppointmentNotConfirmedError,
  AppointmentStore,
  HealthchatClient,
  RequestTimeoutError,
  appointmentIcsUrl,
  dateIn,
  listSlots,
  setSchedule,
} from "../src/index.js";

/** A client that is never connected: the test emits its frames. */
function offlineClient() {
  return new HealthchatClient({ url: "ws://unused", getToken: async () => "t", WebSocket: /** @type {any} */ (class {}) });
}

/**
 * A REST client double recording calls and answering from `routes` (method + path → body).
 * @param {Record<string, (req: any) => any>} routes
 */
function fakeRest(routes) {
  /** @type {Array<{method: string, path: string, options: any}>} */
  const calls = [];
  /** @param {string} method */
  const verb = (method) => async (/** @type {string} */ path, /** @type {any} */ options = {}) => {
    calls.push({ method, path, options });
    const handler = routes[`${method} ${path}`];
    if (!handler) return { error: { error: { code: "not_found", message: "no route" } }, response: new Response(null, { status: 404 }) };
    const answer = handler(options);
    const status = answer?.status ?? 200;
    return status < 400
      ? { data: answer?.body ?? answer, response: new Response(null, { status }) }
      : { error: answer.body, response: new Response(null, { status }) };
  };
  return { rest: /** @type {any} */ ({ GET: verb("GET"), POST: verb("POST"), PUT: verb("PUT"), DELETE: verb("DELETE") }), calls };
}

/** @param {Partial<import("../src/appointments.js").Appointment>} fields */
function appointment(fields) {
  return /** @type {any} */ ({
    id: 1, patient_id: 2, doctor_id: 3, consultation_id: 4, kind: "video", state: "held",
    starts_at: "2026-12-10T09:00:00-05:00", ends_at: "2026-12-10T09:30:00-05:00",
    hold_expires_at: null, created_at: "2026-12-07T00:00:00Z", ...fields,
  });
}

describe("dates and queries", () => {
  it("dateIn gives the calendar date in a zone (either side of midnight UTC)", () => {
    const instant = new Date("2026-03-29T23:30:00Z");
    assert.equal(dateIn(instant, "UTC"), "2026-03-29");
    assert.equal(dateIn(instant, "Asia/Tokyo"), "2026-03-30");
    assert.equal(dateIn(instant, "America/New_York"), "2026-03-29");
  });

  it("listSlots sends the dates in the requested zone (a Date becomes its local date there)", async () => {
    const { rest, calls } = fakeRest({ "GET /api/v1/doctors/{doctor_id}/slots": () => [] });
    await listSlots(rest, 5, { start: new Date("2026-03-29T23:30:00Z"), end: "2026-04-02", timeZone: "Asia/Tokyo" });
    assert.deepEqual(calls[0].options.params, {
      path: { doctor_id: 5 },
      query: { start: "2026-03-30", end: "2026-04-02", tz: "Asia/Tokyo" },
    });
  });

  it("setSchedule sends only the given fields, in the server's names", async () => {
    const { rest, calls } = fakeRest({ "PUT /api/v1/schedule": (req) => req.body });
    await setSchedule(rest, { timeZone: "Africa/Nairobi", slotMinutes: 15, bookable: false, weeklyHours: [] });
    assert.deepEqual(calls[0].options.body, { timezone: "Africa/Nairobi", slot_minutes: 15, bookable: false, weekly_hours: [] });
  });

  it("appointmentIcsUrl", () => {
    assert.equal(appointmentIcsUrl("https://api.example.com/", 12), "https://api.example.com/api/v1/appointments/12/ics");
  });
});

describe("AppointmentStore", () => {
  it("a frame updates at once, then the detail (the truth) replaces it; change events for each", async () => {
    const client = offlineClient();
    const { rest } = fakeRest({
      "GET /api/v1/appointments/{appointment_id}": () => ({ ...appointment({ state: "confirmed", kind: "chat" }), transitions: [] }),
    });
    const store = new AppointmentStore(client, rest);
    /** @type {string[]} */
    const seen = [];
    store.on("change", (a) => seen.push(`${a.state}:${a.kind}`));
    client.emit("frame", /** @type {any} */ ({ type: "appointment.updated", data: { appointment: { ...appointment({ state: "confirmed" }), kind: undefined } } }));
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(seen[0].split(":")[0], "confirmed");
    assert.equal(store.get(1)?.kind, "chat");
    assert.ok(!("transitions" in /** @type {any} */ (store.get(1))));
    store.close();
  });

  it("waitFor resolves on a change, times out otherwise", async () => {
    const client = offlineClient();
    const { rest } = fakeRest({});
    const store = new AppointmentStore(client, rest);
    store.put(appointment({ state: "held" }));
    const waiting = store.waitFor(1, (a) => a.state === "confirmed", { pollMs: 60_000 });
    store.put(appointment({ state: "confirmed" }));
    assert.equal((await waiting).state, "confirmed");
    await assert.rejects(store.waitFor(1, (a) => a.state === "cancelled", { timeoutMs: 30, pollMs: 60_000 }), RequestTimeoutError);
    store.close();
  });

  it("book: a held slot with a client secret calls confirmPayment, then waits for confirmed", async () => {
    const client = offlineClient();
    /** @type {any} */
    let state = "held";
    const { rest, calls } = fakeRest({
      "POST /api/v1/appointments": () => ({
        status: 201,
        body: { appointment: { ...appointment({ state: "held" }), transitions: [] }, payment: { provider: "stripe", payment_intent_id: "pi_1", client_secret: "pi_1_secret", amount: 3000, currency: "GBP" } },
      }),
      "GET /api/v1/appointments/{appointment_id}": () => ({ ...appointment({ state }), transitions: [] }),
      "POST /api/v1/appointments/{appointment_id}/cancel": () => ({ ...appointment({ state: "cancelled" }), transitions: [] }),
    });
    const store = new AppointmentStore(client, rest);
    /** @type {string[]} */
    const paid = [];
    const booked = await store.book(
      { doctorId: 3, startsAt: new Date("2026-12-10T14:00:00Z"), kind: "video" },
      {
        confirmPayment: async (payment) => {
          paid.push(payment.client_secret ?? "");
          state = "confirmed"; // the webhook came
          client.emit("frame", /** @type {any} */ ({ type: "appointment.updated", data: { appointment: appointment({ state: "confirmed" }) } }));
        },
        pollMs: 60_000,
      },
    );
    assert.deepEqual(paid, ["pi_1_secret"]);
    assert.equal(booked.appointment.state, "confirmed");
    assert.equal(calls[0].options.body.starts_at, "2026-12-10T14:00:00.000Z");

    // A refused card: the hold is cancelled at once and the card's error comes back.
    state = "held";
    const refused = new Error("card declined");
    await assert.rejects(store.book({ doctorId: 3, startsAt: "2026-12-10T14:00:00Z", kind: "video" }, { confirmPayment: async () => { throw refused; } }), (e) => e === refused);
    assert.ok(calls.some((c) => c.path === "/api/v1/appointments/{appointment_id}/cancel"));
    assert.equal(store.get(1)?.state, "cancelled");

    // A hold that ends released: AppointmentNotConfirmedError.
    state = "held";
    const pending = store.book({ doctorId: 3, startsAt: "2026-12-10T14:00:00Z", kind: "video" }, { confirmPayment: async () => {}, pollMs: 60_000 });
    await new Promise((resolve) => setTimeout(resolve, 10));
    store.put(appointment({ state: "released" }));
    await assert.rejects(pending, (e) => e instanceof AppointmentNotConfirmedError && e.state === "released");
    store.close();
  });
});
