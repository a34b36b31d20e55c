// Appointments (issue 22): a doctor's free slots in the patient's time zone, booking (hold → the
// payment authorised with the consultation's PaymentIntent → confirmed), cancel, reschedule, the
// .ics file, the doctor's schedule and private calendar feed, and the live `appointment.updated`
// hint kept in an `AppointmentStore`. See docs/appointments.md and docs/clients.md#appointments.
import { Emitter } from "./emitter.js";
import { HealthchatError, RequestTimeoutError, RestError } from "./errors.js";
import { unwrap } from "./rest.js";

/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {import("openapi-fetch").Client<import("./rest.js").paths>} RestClient */
/** @typedef {import("./rest.js").components["schemas"]} Schemas */
/** @typedef {Schemas["AppointmentOut"]} Appointment */
/** @typedef {Schemas["AppointmentDetailOut"]} AppointmentDetail */
/** @typedef {Schemas["AppointmentStateEnum"]} AppointmentState */
/** @typedef {Schemas["ScheduleOut"]} Schedule */
/** @typedef {Schemas["SlotOut"]} Slot */
/** @typedef {Schemas["ConsultationKindEnum"]} AppointmentKind */
/** @typedef {import("./generated/frames.js").ServerAppointmentSummary} AppointmentSummary */
/** @typedef {import("./consultations.js").PaymentInfo} PaymentInfo */
/**
 * What the patient needs to authorise the payment: the consultation's PaymentIntent (as for
 * `requestConsultation`). `client_secret` is null once the card is authorised (the development
 * provider authorises at once).
 * @typedef {Pick<PaymentInfo, "provider" | "payment_intent_id" | "client_secret" | "amount" | "currency">} AppointmentPayment
 */
/** @typedef {{weekday: number, start: string, end: string}} WeeklyWindow  Monday 0; "HH:MM" in the doctor's zone */
/** @typedef {{date: string, kind: "off" | "extra", start?: string, end?: string}} ScheduleException */
/**
 * @typedef {object} ScheduleChanges  given fields only; lists replace the stored ones
 * @property {string} [timeZone]          IANA zone the weekly hours are in
 * @property {number} [slotMinutes]
 * @property {number} [bufferMinutes]
 * @property {number} [horizonDays]
 * @property {number} [minNoticeMinutes]
 * @property {boolean} [bookable]
 * @property {WeeklyWindow[]} [weeklyHours]
 * @property {ScheduleException[]} [exceptions]
 */

/** States after which an appointment never moves again. */
export const FINAL_APPOINTMENT_STATES = Object.freeze(["released", "cancelled", "no_show_doctor", "no_show_patient"]);

/** The time zone this runtime is in (the browser's, in a browser): IANA name, e.g. "Europe/Paris". */
export function localTimeZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

/**
 * The calendar date of `date` in `timeZone`, "YYYY-MM-DD".
 * @param {Date} date @param {string} timeZone
 */
export function dateIn(date, timeZone) {
  // en-CA formats dates as YYYY-MM-DD.
  return new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" }).format(date);
}

/** @param {string | Date} day @param {string} timeZone */
function asDate(day, timeZone) {
  return typeof day === "string" ? day : dateIn(day, timeZone);
}

/**
 * A doctor's free slots from `start` 00:00 to the end of `end` (local dates in `timeZone`, at most
 * 31 days), each `{start, end}` with that zone's UTC offset. `timeZone` defaults to this runtime's
 * (the browser's); `start`/`end` may be "YYYY-MM-DD" or a `Date` (its date in `timeZone`).
 * @param {RestClient} rest @param {number} doctorId
 * @param {{start: string | Date, end: string | Date, timeZone?: string}} range
 * @returns {Promise<Slot[]>}
 */
export function listSlots(rest, doctorId, range) {
  const tz = range.timeZone ?? localTimeZone();
  return unwrap(
    rest.GET("/api/v1/doctors/{doctor_id}/slots", {
      params: { path: { doctor_id: doctorId }, query: { start: asDate(range.start, tz), end: asDate(range.end, tz), tz } },
    }),
  );
}

/** @param {string | Date} when */
function iso(when) {
  return typeof when === "string" ? when : when.toISOString();
}

/**
 * A patient books a slot: `201 {appointment, payment}`. The appointment is `held` until the
 * payment is authorised (`confirmed` already with the development provider). Refusals are
 * `RestError`s: `slot_taken`, `outside_availability`, `doctor_not_found`, `consultation_open`...
 * @param {RestClient} rest
 * @param {{doctorId: number, startsAt: string | Date, kind: AppointmentKind, reason?: string}} request
 * @returns {Promise<{appointment: AppointmentDetail, payment: AppointmentPayment | null}>}
 */
export async function bookAppointment(rest, request) {
  /** @type {Schemas["AppointmentCreateInputRequest"]} */
  const body = { doctor_id: request.doctorId, starts_at: iso(request.startsAt), kind: request.kind };
  if (request.reason != null) body.reason = request.reason;
  const data = await unwrap(rest.POST("/api/v1/appointments", { body }));
  // The OpenAPI schema leaves this answer untyped; its shape is documented in docs/appointments.md.
  return /** @type {{appointment: AppointmentDetail, payment: AppointmentPayment | null}} */ (/** @type {unknown} */ (data));
}

/**
 * The caller's appointments (as patient or doctor), one cursor page.
 * @param {RestClient} rest @param {{cursor?: string, limit?: number}} [page]
 */
export function listAppointments(rest, page = {}) {
  /** @type {{cursor?: string, limit?: number}} */
  const query = {};
  if (page.cursor) query.cursor = page.cursor;
  if (page.limit != null) query.limit = page.limit;
  return unwrap(rest.GET("/api/v1/appointments", { params: { query } }));
}

/** With its transitions. @param {RestClient} rest @param {number} id @returns {Promise<AppointmentDetail>} */
export function getAppointment(rest, id) {
  return unwrap(rest.GET("/api/v1/appointments/{appointment_id}", { params: { path: { appointment_id: id } } }));
}

/**
 * Cancel (the patient or the doctor; the policy decides the fee: docs/appointments.md). Refusals:
 * `too_late_to_cancel`, `invalid_transition`... A repeated cancel returns the cancelled appointment.
 * @param {RestClient} rest @param {number} id @returns {Promise<AppointmentDetail>}
 */
export function cancelAppointment(rest, id) {
  return unwrap(rest.POST("/api/v1/appointments/{appointment_id}/cancel", { params: { path: { appointment_id: id } } }));
}

/**
 * Move to another free slot of the same doctor. Refusals: `slot_taken`, `outside_availability`,
 * `too_late_to_reschedule`, `invalid_transition`.
 * @param {RestClient} rest @param {number} id @param {string | Date} startsAt
 * @returns {Promise<AppointmentDetail>}
 */
export function rescheduleAppointment(rest, id, startsAt) {
  return unwrap(
    rest.POST("/api/v1/appointments/{appointment_id}/reschedule", {
      params: { path: { appointment_id: id } },
      body: { starts_at: iso(startsAt) },
    }),
  );
}

/**
 * The URL of an appointment's `.ics` file (it needs the caller's `Authorization` header: fetch
 * it with `downloadAppointmentIcs`, or through the app's own authenticated fetch).
 * @param {string} baseUrl e.g. "https://api.example.com" @param {number} id
 */
export function appointmentIcsUrl(baseUrl, id) {
  return `${baseUrl.replace(/\/+$/, "")}/api/v1/appointments/${encodeURIComponent(String(id))}/ics`;
}

/**
 * The appointment as an iCalendar file (`text/calendar`, one event), e.g. for a download link
 * (`URL.createObjectURL(new Blob([text], {type: "text/calendar"}))`).
 * @param {RestClient} rest @param {number} id @returns {Promise<string>}
 */
export async function downloadAppointmentIcs(rest, id) {
  const text = await unwrap(
    rest.GET("/api/v1/appointments/{appointment_id}/ics", { params: { path: { appointment_id: id } }, parseAs: "text" }),
  );
  return /** @type {string} */ (/** @type {unknown} */ (text));
}

/** The signed-in doctor's schedule. @param {RestClient} rest @returns {Promise<Schedule>} */
export function getSchedule(rest) {
  return unwrap(rest.GET("/api/v1/schedule"));
}

/**
 * The doctor sets their schedule (given fields only; lists replace the stored ones). Refusals:
 * `invalid_time_zone`, `invalid_weekly_hours`, `invalid_exceptions`, `invalid`, `doctors_only`.
 * @param {RestClient} rest @param {ScheduleChanges} changes @returns {Promise<Schedule>}
 */
export function setSchedule(rest, changes) {
  /** @type {Record<string, unknown>} */
  const body = {};
  if (changes.timeZone != null) body.timezone = changes.timeZone;
  if (changes.slotMinutes != null) body.slot_minutes = changes.slotMinutes;
  if (changes.bufferMinutes != null) body.buffer_minutes = changes.bufferMinutes;
  if (changes.horizonDays != null) body.horizon_days = changes.horizonDays;
  if (changes.minNoticeMinutes != null) body.min_notice_minutes = changes.minNoticeMinutes;
  if (changes.bookable != null) body.bookable = changes.bookable;
  if (changes.weeklyHours != null) body.weekly_hours = changes.weeklyHours;
  if (changes.exceptions != null) body.exceptions = changes.exceptions;
  return unwrap(rest.PUT("/api/v1/schedule", { body: /** @type {Schemas["ScheduleInputRequest"]} */ (body) }));
}

/**
 * The doctor's private calendar feed: a new URL (shown once; the previous one stops working).
 * @param {RestClient} rest @returns {Promise<string>}
 */
export async function rotateCalendarFeed(rest) {
  const data = await unwrap(rest.POST("/api/v1/calendar/feed"));
  return data.url;
}

/** Revoke the doctor's calendar feed (its URL answers `404 feed_not_found`). @param {RestClient} rest */
export async function revokeCalendarFeed(rest) {
  await unwrap(rest.DELETE("/api/v1/calendar/feed"));
}

/**
 * The live `appointment.updated` frame (a hint after each committed change, not replayed after a
 * reconnect: `getAppointment` is the truth).
 * @param {HealthchatClient} client @param {(appointment: AppointmentSummary) => void} listener
 * @returns {() => void} unsubscribe
 */
export function onAppointmentUpdated(client, listener) {
  return client.on("frame", (frame) => {
    if (frame.type === "appointment.updated") listener(frame.data.appointment);
  });
}

/** A booking whose payment was never authorised: the hold ended (`released`) or was cancelled. */
export class AppointmentNotConfirmedError extends HealthchatError {
  /** @param {Appointment | AppointmentSummary} appointment */
  constructor(appointment) {
    super(`appointment ${appointment.id} ended ${appointment.state} before it was confirmed`);
    this.appointment = appointment;
    /** @type {string} */
    this.state = appointment.state ?? "unknown";
  }
}

/**
 * The caller's appointments, kept current: `load()` reads them over REST (and again after every
 * reconnect, since `appointment.updated` is not replayed), each `appointment.updated` frame
 * updates one at once (and its detail is fetched, the frame being a hint). `change` fires with the
 * appointment after every update.
 * @extends {Emitter<{change: Appointment}>}
 */
export class AppointmentStore extends Emitter {
  /**
   * @param {HealthchatClient} client @param {RestClient} rest
   * @param {{pageLimit?: number, maxPages?: number}} [options]
   */
  constructor(client, rest, options = {}) {
    super();
    this.client = client;
    this.rest = rest;
    this.pageLimit = options.pageLimit ?? 100;
    this.maxPages = options.maxPages ?? 10;
    /** @type {Map<number, Appointment>} */
    this.items = new Map();
    this.unsubscribe = [
      onAppointmentUpdated(client, (summary) => void this.updated(summary)),
      client.on("ready", () => {
        this.load().catch((error) => client.emit("error", error));
      }),
    ];
  }

  /** Read the caller's appointments (up to `maxPages` pages). */
  async load() {
    /** @type {string | undefined} */
    let cursor;
    for (let page = 0; page < this.maxPages; page += 1) {
      const data = await listAppointments(this.rest, { cursor, limit: this.pageLimit });
      for (const item of data.results) this.put(item);
      cursor = data.next ? (new URL(data.next).searchParams.get("cursor") ?? undefined) : undefined;
      if (!cursor) break;
    }
    return this.list();
  }

  /** Sorted by start time. */
  list() {
    return [...this.items.values()].sort((a, b) => Date.parse(a.starts_at) - Date.parse(b.starts_at));
  }

  /** @param {number} id */
  get(id) {
    return this.items.get(id);
  }

  /** @param {Appointment} item */
  put(item) {
    const known = this.items.get(item.id);
    if (known && JSON.stringify(known) === JSON.stringify({ ...known, ...item })) return;
    const merged = { ...known, ...item };
    this.items.set(item.id, merged);
    this.emit("change", merged);
  }

  /** @param {AppointmentSummary} summary */
  async updated(summary) {
    const known = this.items.get(summary.id);
    // At once from the frame (state and times), then the detail (the truth).
    this.put(/** @type {Appointment} */ ({ ...(known ?? { kind: "", created_at: "", hold_expires_at: null }), ...summary }));
    try {
      const { transitions: _t, ...detail } = await getAppointment(this.rest, summary.id);
      this.put(detail);
    } catch (error) {
      if (!(error instanceof RestError)) this.client.emit("error", /** @type {any} */ (error));
    }
  }

  /**
   * Resolve with the appointment once `predicate` holds (checked on every change; also against
   * REST every `pollMs`, in case a frame was missed while the socket was away).
   * @param {number} id @param {(a: Appointment) => boolean} predicate
   * @param {{timeoutMs?: number, pollMs?: number}} [options]
   * @returns {Promise<Appointment>}
   */
  waitFor(id, predicate, options = {}) {
    const timeoutMs = options.timeoutMs ?? 120_000;
    const pollMs = options.pollMs ?? 5000;
    return new Promise((resolve, reject) => {
      /** @type {ReturnType<typeof setInterval> | null} */
      let poller = null;
      /** @type {ReturnType<typeof setTimeout> | null} */
      let timer = null;
      const done = () => {
        off();
        if (poller) clearInterval(poller);
        if (timer) clearTimeout(timer);
      };
      /** @param {Appointment} a */
      const check = (a) => {
        if (a.id !== id || !predicate(a)) return;
        done();
        resolve(a);
      };
      const off = this.on("change", check);
      timer = setTimeout(() => {
        done();
        reject(new RequestTimeoutError(`appointment ${id}: not in the expected state after ${timeoutMs} ms`));
      }, timeoutMs);
      poller = setInterval(() => {
        getAppointment(this.rest, id).then(
          ({ transitions: _t, ...detail }) => this.put(detail),
          () => {},
        );
      }, pollMs);
      const known = this.items.get(id);
      if (known) check(known);
    });
  }

  /**
   * Book a slot and see it through: the hold, the payment, confirmation. When the answer carries
   * a `client_secret` (a real card to authorise), `confirmPayment(payment)` runs it — in a browser
   * Stripe.js' `stripe.confirmCardPayment(payment.client_secret, ...)` — then the store waits for
   * `confirmed` (Stripe's webhook confirms it on the server; the frame tells). When
   * `confirmPayment` throws (a declined card), the hold is cancelled at once (the slot is free
   * again, nothing was authorised) and its error is rethrown. Rejects with
   * `AppointmentNotConfirmedError` when the hold ends without a payment, or with the booking's
   * `RestError` (`slot_taken`...).
   * @param {{doctorId: number, startsAt: string | Date, kind: AppointmentKind, reason?: string}} request
   * @param {{confirmPayment?: (payment: AppointmentPayment) => Promise<unknown>, timeoutMs?: number, pollMs?: number}} [options]
   * @returns {Promise<{appointment: Appointment, payment: AppointmentPayment | null}>}
   */
  async book(request, options = {}) {
    const { appointment: detail, payment } = await bookAppointment(this.rest, request);
    const { transitions: _t, ...appointment } = detail;
    this.put(appointment);
    if (appointment.state === "held" && payment?.client_secret) {
      try {
        if (!options.confirmPayment) throw new HealthchatError("the payment needs confirmPayment (e.g. Stripe.js)");
        await options.confirmPayment(payment);
      } catch (error) {
        // The card was refused (or there was none): give the slot back at once rather than at
        // the hold's end. Nothing was authorised, so nothing is charged.
        await this.cancel(appointment.id).catch(() => {});
        throw error;
      }
    }
    const settled = await this.waitFor(appointment.id, (a) => a.state !== "held", options);
    if (settled.state !== "confirmed") throw new AppointmentNotConfirmedError(settled);
    return { appointment: settled, payment };
  }

  /** @param {number} id */
  async cancel(id) {
    const { transitions: _t, ...appointment } = await cancelAppointment(this.rest, id);
    this.put(appointment);
    return appointment;
  }

  /** @param {number} id @param {string | Date} startsAt */
  async reschedule(id, startsAt) {
    const { transitions: _t, ...appointment } = await rescheduleAppointment(this.rest, id, startsAt);
    this.put(appointment);
    return appointment;
  }

  close() {
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
  }
}
