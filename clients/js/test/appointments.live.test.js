// The SDK's appointments module against a live healthchat server paying through (fake) Stripe,
// started by tests/test_sdk_appointments_live.py: the doctor's schedule, slots in the patient's
// time zone, booking through hold → card → webhook → confirmed seen live on both sides,
// slot_taken for a second patient, a declined card releasing the slot, reschedule, .ics,
// cancel, the private calendar feed, and who may see what; then the waiting room: check-in (frame
// and REST), the doctor's live queue, the patients' live positions, admission with a call that
// connects (libwebrtc on loopback), the next patient moving up; the on-demand queue by specialty
// (two doctors accept at once: one wins).
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { WebSocket } from "ws";
import {
  AppointmentStore,
  CallManager,
  OnDemandQueue,
  getConsultation,
  setAvailability,
  HealthchatClient,
  RestError,
  ServerError,
  WaitingRoom,
  appointmentIcsUrl,
  bookAppointment,
  dateIn,
  downloadAppointmentIcs,
  getAppointment,
  getSchedule,
  listAppointments,
  listSlots,
  localTimeZone,
  onAppointmentUpdated,
  revokeCalendarFeed,
  rotateCalendarFeed,
  setSchedule,
  createRestClient,
} from "../src/index.js";
import { RTCPeerConnection, syntheticStream } from "../testing/media.js";

/** @param {string} name */
function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through tests/test_sdk_appointments_live.py`);
  return value;
}

const HTTP_URL = env("HC_HTTP_URL");
const WS_URL = env("HC_WS_URL");
const CARD_URL = env("HC_CARD_URL");
const DOCTOR_ID = Number(env("HC_DOCTOR_ID"));
const PATIENT_TOKENS = env("HC_PATIENT_TOKENS").split(",");
const PATIENT_IDS = env("HC_PATIENT_IDS").split(",").map(Number);
const TOKENS = { doctor: env("HC_DOCTOR_TOKEN"), colleague: env("HC_COLLEAGUE_TOKEN"), room: env("HC_ROOM_DOCTOR_TOKEN") };
const ROOM_DOCTOR_ID = Number(env("HC_ROOM_DOCTOR_ID"));
const SPECIALTY = env("HC_SPECIALTY");
const ON_DEMAND_DOCTOR_IDS = env("HC_ON_DEMAND_DOCTOR_IDS").split(",").map(Number);
const ON_DEMAND_DOCTOR_TOKENS = env("HC_ON_DEMAND_DOCTOR_TOKENS").split(",");

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** @param {() => boolean} predicate @param {string} what @param {number} [timeoutMs] */
async function waitFor(predicate, what, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * What Stripe.js does in the patient's app (the test's card desk confirms the PaymentIntent at the
 * fake Stripe and delivers the signed webhook, as Stripe would).
 * @param {"visa" | "declined"} card
 */
const payWith = (card) => async (/** @type {{payment_intent_id: string}} */ payment) => {
  const answer = await fetch(CARD_URL, { method: "POST", body: JSON.stringify({ payment_intent_id: payment.payment_intent_id, card }) });
  const body = await answer.json();
  if (!answer.ok) throw Object.assign(new Error(body.error?.message ?? "card refused"), { code: body.error?.code });
  return body;
};

/** @type {HealthchatClient[]} */
const open = [];
/** @type {Array<() => void>} */
const cleanups = [];

/** @param {string} token */
async function session(token) {
  const getToken = async () => token;
  const client = new HealthchatClient({ url: WS_URL, getToken, WebSocket });
  const rest = createRestClient({ baseUrl: HTTP_URL, getToken });
  /** @type {Error[]} */
  const errors = [];
  client.on("error", (e) => errors.push(e));
  const store = new AppointmentStore(client, rest);
  const room = new WaitingRoom(client, rest);
  const calls = new CallManager({ client, rest, RTCPeerConnection, getIceServers: async () => [] });
  /** @type {import("../src/call-session.js").CallSession[]} */
  const incoming = [];
  calls.on("incoming", (call) => incoming.push(call));
  open.push(client);
  await client.connect();
  await waitFor(() => client.state === "ready", "ready");
  await store.load();
  const onDemand = new OnDemandQueue(client, rest);
  return { client, rest, store, room, calls, incoming, onDemand, errors };
}

/** A date `days` from now in `tz`, "YYYY-MM-DD". @param {number} days @param {string} tz */
const daysAhead = (days, tz) => dateIn(new Date(Date.now() + days * 86_400_000), tz);

/** @param {string} isoWithOffset */
const offsetOf = (isoWithOffset) => isoWithOffset.slice(-6);

describe("the SDK's appointments against a live server", () => {
  after(() => {
    for (const cleanup of cleanups) cleanup();
    for (const client of open) client.close();
  });

  it("schedule, slots in the patient's zone, book → pay → confirmed live, slot_taken, a declined card, reschedule, ics, cancel, feed", async () => {
    const doctor = await session(TOKENS.doctor);
    const [alice, bob, carol] = await Promise.all(PATIENT_TOKENS.map((t) => session(t)));

    // --- the doctor's schedule -------------------------------------------------------------
    const initial = await getSchedule(doctor.rest);
    assert.equal(initial.doctor_id, DOCTOR_ID);
    await assert.rejects(
      setSchedule(doctor.rest, { timeZone: "Mars/Olympus_Mons" }),
      // a field error: `invalid`, with the field's own code
      (e) => e instanceof RestError && e.status === 400 && JSON.stringify(e.body.error).includes("invalid_time_zone"),
    );
    await assert.rejects(getSchedule(alice.rest), (e) => e instanceof RestError && e.status === 403 && e.code === "doctors_only");
    const schedule = await setSchedule(doctor.rest, {
      timeZone: "America/New_York",
      slotMinutes: 30,
      bufferMinutes: 0,
      minNoticeMinutes: 0,
      horizonDays: 60,
      bookable: true,
      weeklyHours: [0, 1, 2, 3, 4, 5, 6].map((weekday) => ({ weekday, start: "09:00", end: "11:00" })),
      exceptions: [],
    });
    assert.equal(schedule.timezone, "America/New_York");
    assert.equal(schedule.slot_minutes, 30);
    assert.equal(schedule.weekly_hours.length, 7);

    // --- slots in the patient's zone (the runtime's by default: TZ=Asia/Tokyo) --------------
    assert.equal(localTimeZone(), "Asia/Tokyo");
    const start = daysAhead(5, "Asia/Tokyo");
    const end = daysAhead(7, "Asia/Tokyo");
    const tokyo = await listSlots(alice.rest, DOCTOR_ID, { start, end });
    assert.ok(tokyo.length >= 8, `slots: ${tokyo.length}`);
    assert.ok(tokyo.every((s) => offsetOf(s.start) === "+09:00"), tokyo[0].start);
    const london = await listSlots(alice.rest, DOCTOR_ID, { start, end, timeZone: "Europe/London" });
    // The same instants, told in another zone (the date range differs a little: compare the overlap).
    const instants = new Set(london.map((s) => Date.parse(s.start)));
    assert.ok(tokyo.filter((s) => instants.has(Date.parse(s.start))).length >= 4);
    // 09:00-11:00 New York, 30 min apart: each slot starts at :00 or :30 New York time.
    for (const s of tokyo) {
      const local = new Intl.DateTimeFormat("en-GB", { timeZone: "America/New_York", hour: "2-digit", minute: "2-digit" }).format(new Date(s.start));
      assert.ok(["09:00", "09:30", "10:00", "10:30"].includes(local), local);
    }
    await assert.rejects(
      listSlots(alice.rest, DOCTOR_ID, { start, end, timeZone: "Not/AZone" }),
      (e) => e instanceof RestError && e.code === "invalid_time_zone",
    );

    // --- book: held → the card (Stripe.js) → the webhook → confirmed, live on both sides ----
    /** @type {string[]} */
    const doctorSaw = [];
    onAppointmentUpdated(doctor.client, (a) => doctorSaw.push(`${a.id}:${a.state}`));
    const slot = tokyo[0];
    const { appointment, payment } = await alice.store.book(
      { doctorId: DOCTOR_ID, startsAt: slot.start, kind: "video", reason: "a rash" },
      { confirmPayment: payWith("visa"), pollMs: 60_000 },
    );
    assert.equal(appointment.state, "confirmed");
    assert.equal(Date.parse(appointment.starts_at), Date.parse(slot.start));
    assert.ok(payment?.client_secret, "a real card needed the client secret");
    assert.equal(payment?.amount, 3000);
    await waitFor(() => doctorSaw.includes(`${appointment.id}:confirmed`), "the doctor's live frame");
    await waitFor(() => doctor.store.get(appointment.id)?.state === "confirmed", "the doctor's store");
    const detail = await getAppointment(alice.rest, appointment.id);
    assert.deepEqual(
      detail.transitions.map((t) => t.to_state),
      ["held", "confirmed"],
    );
    // The slot is gone for everyone.
    const after = await listSlots(bob.rest, DOCTOR_ID, { start, end });
    assert.ok(!after.some((s) => Date.parse(s.start) === Date.parse(slot.start)));

    // --- a second patient on the same slot: slot_taken, nothing held ------------------------
    await assert.rejects(
      bob.store.book({ doctorId: DOCTOR_ID, startsAt: slot.start, kind: "chat" }, { confirmPayment: payWith("visa") }),
      (e) => e instanceof RestError && e.status === 409 && e.code === "slot_taken",
    );
    assert.equal(bob.store.list().length, 0);

    // --- a declined card: the SDK cancels the hold, the slot is free again -------------------
    const second = tokyo[1];
    await assert.rejects(
      carol.store.book({ doctorId: DOCTOR_ID, startsAt: second.start, kind: "chat" }, { confirmPayment: payWith("declined") }),
      (e) => /** @type {any} */ (e).code === "card_declined",
    );
    const [released] = carol.store.list();
    assert.equal(released.state, "cancelled");
    assert.ok((await listSlots(carol.rest, DOCTOR_ID, { start, end })).some((s) => Date.parse(s.start) === Date.parse(second.start)));

    // --- reschedule: the doctor's store follows live ---------------------------------------
    const later = tokyo[3];
    const moved = await alice.store.reschedule(appointment.id, later.start);
    assert.equal(Date.parse(moved.starts_at), Date.parse(later.start));
    assert.equal(moved.state, "confirmed");
    await waitFor(
      () => Date.parse(doctor.store.get(appointment.id)?.starts_at ?? "") === Date.parse(later.start),
      "the doctor sees the new time",
    );

    // --- .ics: with the caller's token only; never for someone else ------------------------
    const ics = await downloadAppointmentIcs(alice.rest, appointment.id);
    assert.match(ics, /BEGIN:VCALENDAR/);
    assert.match(ics, new RegExp(`UID:appointment-${appointment.id}@healthchat`));
    assert.doesNotMatch(ics, /a rash/, "never the reason");
    const anonymous = await fetch(appointmentIcsUrl(HTTP_URL, appointment.id));
    assert.equal(anonymous.status, 401);
    const colleague = createRestClient({ baseUrl: HTTP_URL, getToken: async () => TOKENS.colleague });
    await assert.rejects(getAppointment(colleague, appointment.id), (e) => e instanceof RestError && e.status === 404 && e.code === "appointment_not_found");
    await assert.rejects(downloadAppointmentIcs(bob.rest, appointment.id), (e) => e instanceof RestError && e.code === "appointment_not_found");
    assert.ok((await listAppointments(doctor.rest)).results.some((a) => a.id === appointment.id));
    assert.ok(!(await listAppointments(bob.rest)).results.some((a) => a.id === appointment.id));

    // --- the doctor's private feed: rotate, read without a header, rotate again, revoke ----
    const url = await rotateCalendarFeed(doctor.rest);
    const feed = await fetch(url);
    assert.equal(feed.status, 200);
    assert.match(feed.headers.get("content-type") ?? "", /text\/calendar/);
    assert.match(await feed.text(), new RegExp(`appointment-${appointment.id}@healthchat`));
    const rotated = await rotateCalendarFeed(doctor.rest);
    assert.notEqual(rotated, url);
    assert.equal((await fetch(url)).status, 404);
    assert.equal((await fetch(rotated)).status, 200);
    await revokeCalendarFeed(doctor.rest);
    assert.equal((await fetch(rotated)).status, 404);
    await assert.rejects(rotateCalendarFeed(alice.rest), (e) => e instanceof RestError && e.code === "doctors_only");

    // --- cancel early (free): both stores see it live ---------------------------------------
    const cancelled = await alice.store.cancel(appointment.id);
    assert.equal(cancelled.state, "cancelled");
    await waitFor(() => doctor.store.get(appointment.id)?.state === "cancelled", "the doctor sees the cancellation");
    await waitFor(() => doctorSaw.includes(`${appointment.id}:cancelled`), "the frame");
    const again = await alice.store.cancel(appointment.id); // idempotent
    assert.equal(again.state, "cancelled");

    // --- a reconnect reloads the store (frames are not replayed) ---------------------------
    // A hold is announced to the patient only; the doctor's store learns of it from REST when
    // its socket comes back.
    const { appointment: direct } = await bookAppointment(bob.rest, { doctorId: DOCTOR_ID, startsAt: tokyo[5].start, kind: "chat" });
    assert.equal(direct.state, "held");
    await waitFor(() => bob.store.get(direct.id)?.state === "held", "the patient's store sees the hold live");
    assert.equal(doctor.store.get(direct.id), undefined);
    doctor.client.dropConnection();
    await waitFor(() => doctor.store.get(direct.id)?.state === "held", "the doctor's store reloaded after the reconnect");
    await waitFor(() => doctor.client.state === "ready", "the doctor's socket ready again");
    await bob.store.cancel(direct.id);
    await waitFor(() => doctor.store.get(direct.id)?.state === "cancelled", "the doctor sees the cancelled hold live");
    assert.equal(PATIENT_IDS.length, 3);

    assert.deepEqual(
      [doctor, alice, bob, carol].flatMap((s) => s.errors.filter((e) => !(e.name === "ConnectionDroppedError"))),
      [],
      "no protocol errors (appointment.updated is in the contract)",
    );
  });
  it("waiting room: check-in (frame and REST), the doctor's live queue, live positions, admit with a call that connects, the next moves up", async () => {
    const doctor = await session(TOKENS.room);
    const [alice, bob, carol] = await Promise.all(PATIENT_TOKENS.map((t) => session(t)));
    // Five-minute slots all day (UTC): the next two start within ten minutes, when check-in is open.
    await setSchedule(doctor.rest, {
      timeZone: "UTC",
      slotMinutes: 5,
      bufferMinutes: 0,
      minNoticeMinutes: 0,
      horizonDays: 3,
      bookable: true,
      weeklyHours: [0, 1, 2, 3, 4, 5, 6].map((weekday) => ({ weekday, start: "00:00", end: "23:55" })),
      exceptions: [],
    });
    const today = dateIn(new Date(), "UTC");
    const slots = await listSlots(bob.rest, ROOM_DOCTOR_ID, { start: today, end: daysAhead(2, "UTC"), timeZone: "UTC" });
    const [first, second] = slots;
    const far = slots.find((s) => Date.parse(s.start) > Date.now() + 3 * 3_600_000);
    assert.ok(first && second && far);
    assert.ok(Date.parse(second.start) - Date.now() <= 10 * 60_000, "both within the check-in window");
    const book = (/** @type {any} */ who, /** @type {{start: string}} */ slot) =>
      who.store.book({ doctorId: ROOM_DOCTOR_ID, startsAt: slot.start, kind: "voice" }, { confirmPayment: payWith("visa"), pollMs: 60_000 });
    const { appointment: bobs } = await book(bob, first);
    const { appointment: carols } = await book(carol, second);
    const { appointment: alices } = await book(alice, far);

    // The doctor's room starts empty; the queue then follows live.
    assert.deepEqual(await doctor.room.load(), []);
    /** @type {number[][]} */
    const queues = [];
    doctor.room.on("queue", (q) => queues.push(q.queue.map((e) => e.appointment_id)));

    // Too early for alice (hours ahead); the doctor cannot check in; nor anyone into another's.
    await assert.rejects(alice.room.checkIn(alices.id), (e) => e instanceof ServerError && e.code === "check_in_too_early");
    await assert.rejects(doctor.room.checkIn(bobs.id), (e) => e instanceof ServerError && e.code === "not_the_patient");
    await assert.rejects(alice.room.checkIn(bobs.id), (e) => e instanceof ServerError && e.code === "appointment_not_found");
    // Nobody waits yet: admitting is refused.
    await assert.rejects(doctor.room.admit(bobs.id), (e) => e instanceof ServerError && e.code === "patient_not_waiting");

    // Bob checks in over the socket, Carol over REST.
    const checked = await bob.room.checkIn(bobs.id);
    assert.equal(checked.appointment.state, "checked_in");
    assert.equal(checked.position?.position, 1);
    await waitFor(() => bob.store.get(bobs.id)?.state === "checked_in", "bob's store: checked_in");
    const carolChecked = await carol.room.checkInOverRest(carols.id);
    assert.equal(carolChecked.position?.position, 2);
    assert.equal(carolChecked.position?.ahead, 1);
    await waitFor(() => doctor.room.queue.length === 2, "the doctor's queue, live");
    assert.deepEqual(doctor.room.queue.map((e) => e.appointment_id), [bobs.id, carols.id]);
    assert.ok(doctor.room.queue.every((e) => e.checked_in_at && typeof e.estimated_wait_seconds === "number"));
    assert.equal(doctor.room.queue[0].position, 1);
    assert.ok(queues.length >= 1);
    const again = await bob.room.checkIn(bobs.id); // idempotent
    assert.equal(again.appointment.state, "checked_in");
    assert.equal((await carol.room.loadPosition(carols.id)).position, 2);
    await assert.rejects(bob.room.admit(bobs.id), (e) => e instanceof ServerError && e.code === "not_the_doctor");

    // The doctor admits Carol first (any order) with an audio call through the SDK's CallManager.
    /** @type {string[]} */
    const carolLeft = [];
    carol.room.on("left", (l) => carolLeft.push(l.state));
    const tone = syntheticStream();
    cleanups.push(tone.stop);
    const admitted = await doctor.room.admit(carols.id, { call: { manager: doctor.calls, media: "audio", stream: tone.stream } });
    assert.equal(admitted.appointment.state, "admitted");
    assert.equal(admitted.consultation.state, "in_progress");
    assert.ok(admitted.session, String(admitted.callError));
    await waitFor(() => carol.incoming.length === 1, "carol's phone rings");
    const answerTone = syntheticStream({ frequency: 880 });
    cleanups.push(answerTone.stop);
    await carol.incoming[0].accept({ stream: answerTone.stream });
    await waitFor(() => admitted.session?.state === "connected" && carol.incoming[0].state === "connected", "the call connects");
    assert.equal(carol.incoming[0].conversationId, admitted.consultation.conversation_id);
    await waitFor(() => carolLeft.includes("admitted"), "carol left the waiting room");
    await waitFor(() => carol.store.get(carols.id)?.state === "admitted", "carol's store: admitted");

    // Bob is alone in the queue now (live for both), then admitted without a call (REST).
    await waitFor(() => doctor.room.queue.length === 1 && doctor.room.queue[0].appointment_id === bobs.id, "the doctor's queue moved");
    await waitFor(() => bob.room.positionOf(bobs.id)?.position === 1 && bob.room.positionOf(bobs.id)?.ahead === 0, "bob's position, live");
    await admitted.session?.hangup();
    const viaRest = await doctor.room.admitOverRest(bobs.id);
    assert.equal(viaRest.appointment.state, "admitted");
    await waitFor(() => doctor.room.queue.length === 0, "the queue is empty");
    await waitFor(() => bob.room.positionOf(bobs.id) === undefined, "bob left the waiting room");
    await assert.rejects(bob.room.loadPosition(bobs.id), (e) => e instanceof RestError && e.code === "not_waiting");
    const detail = await getAppointment(bob.rest, bobs.id);
    assert.deepEqual(detail.transitions.map((t) => t.to_state), ["held", "confirmed", "checked_in", "admitted"]);
    assert.deepEqual(
      [doctor, alice, bob, carol].flatMap((s) => s.errors),
      [],
      "no protocol errors (the waiting-room frames are in the contract)",
    );
  });
  it("on-demand by specialty: the request reaches both doctors live, two accept at once and one wins, the patient pays; a cancel", async () => {
    const doctors = await Promise.all(ON_DEMAND_DOCTOR_TOKENS.map((t) => session(t)));
    const patient = await session(PATIENT_TOKENS[1]);
    for (const d of doctors) {
      await setAvailability(d.rest, { online: true, outsideHours: "queue" });
      await d.onDemand.load();
      assert.deepEqual(d.onDemand.open(), []);
    }
    const asked = await patient.onDemand.request({ specialty: SPECIALTY, kind: "chat", reason: "an itchy rash" });
    assert.equal(asked.state, "open");
    assert.equal(asked.specialty, SPECIALTY);
    await assert.rejects(
      patient.onDemand.request({ specialty: SPECIALTY, kind: "video" }),
      (e) => e instanceof RestError && e.status === 409 && e.code === "request_open",
    );
    await assert.rejects(
      doctors[0].onDemand.request({ specialty: SPECIALTY, kind: "chat" }),
      (e) => e instanceof RestError && e.code === "patients_only",
    );
    // Both doctors see it live (the frame carries no reason); their list (REST) has the reason.
    for (const d of doctors) await waitFor(() => d.onDemand.open().some((r) => r.id === asked.id), "the request, live");
    await doctors[0].onDemand.load();
    assert.equal(doctors[0].onDemand.get(asked.id)?.reason, "an itchy rash");

    // Two acceptances at once: exactly one wins.
    const waiting = patient.onDemand.waitFor(asked.id, { pollMs: 60_000 });
    const outcomes = await Promise.allSettled(doctors.map((d) => d.onDemand.accept(asked.id)));
    const won = outcomes.filter((o) => o.status === "fulfilled");
    const lost = outcomes.filter((o) => o.status === "rejected");
    assert.equal(won.length, 1, JSON.stringify(outcomes));
    const refusal = /** @type {PromiseRejectedResult} */ (lost[0]).reason;
    assert.ok(refusal instanceof RestError && refusal.status === 409 && refusal.code === "request_taken", String(refusal));
    const winner = ON_DEMAND_DOCTOR_IDS[outcomes.findIndex((o) => o.status === "fulfilled")];
    const accepted = await waiting;
    assert.equal(accepted.state, "accepted");
    assert.equal(accepted.doctor_id, winner);
    assert.ok(accepted.consultation_id);
    for (const d of doctors) await waitFor(() => d.onDemand.open().length === 0, "the request left every queue");

    // The patient pays the consultation as any other (the card, then Stripe's webhook).
    const consultation = await getConsultation(patient.rest, /** @type {number} */ (accepted.consultation_id));
    assert.equal(consultation.doctor_id, winner);
    assert.equal(consultation.price, winner === ON_DEMAND_DOCTOR_IDS[0] ? 2500 : 3500); // the winner's price
    const payment = /** @type {any} */ (consultation).payment;
    assert.ok(payment?.client_secret, JSON.stringify(consultation));
    await payWith("visa")(payment);
    const deadline = Date.now() + 30_000;
    while ((await getConsultation(patient.rest, consultation.id)).state !== "paid") {
      assert.ok(Date.now() < deadline, "the consultation is paid");
      await sleep(200);
    }

    // Another request, withdrawn: it leaves the doctors' queues live.
    const second = await patient.onDemand.request({ specialty: SPECIALTY, kind: "voice" });
    for (const d of doctors) await waitFor(() => d.onDemand.open().some((r) => r.id === second.id), "the second request, live");
    const withdrawn = await patient.onDemand.cancel(second.id);
    assert.equal(withdrawn.state, "cancelled");
    for (const d of doctors) await waitFor(() => d.onDemand.get(second.id)?.state === "cancelled", "withdrawn, live");
    await assert.rejects(doctors[0].onDemand.accept(second.id), (e) => e instanceof RestError && e.code === "request_closed");
    assert.deepEqual(
      [...doctors, patient].flatMap((s) => s.errors),
      [],
      "no protocol errors (on_demand.updated is in the contract)",
    );
  });
});
