// Appointments (issue 22), through the SDK's appointments and waiting-room modules only.
// Patients: "Book an appointment" (a doctor, their free slots in the browser's time zone, book;
// the state follows live) and "My appointments" (cancel, reschedule, .ics, check in, then the
// place in the waiting room, live). Doctors: the waiting room (live queue; admit, with a call or
// not: the chat opens), their appointments (live, cancel) and the schedule editor with the private
// calendar feed. Both: the on-demand queue by specialty (a patient asks for the first available
// doctor; the doctors of that specialty see it live and one accepts).
import {
  AppointmentStore,
  FINAL_APPOINTMENT_STATES,
  OnDemandQueue,
  WaitingRoom,
  getConsultation,
  bookAppointment,
  dateIn,
  downloadAppointmentIcs,
  getSchedule,
  listSlots,
  localTimeZone,
  revokeCalendarFeed,
  rotateCalendarFeed,
  setSchedule,
} from "@healthchat/client";
import { byId, el } from "./dom.js";

/** @typedef {import("./conversations.js").Session} Session */
/** @typedef {{start: string, end: string}} Slot */
/** @typedef {{id: number, patient_id: number, doctor_id: number, kind: string, state?: string, starts_at: string, ends_at: string, hold_expires_at?: string | null}} Appointment */

const WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const SLOT_DAYS = 7;
const STATE_LABELS = /** @type {Record<string, string>} */ ({
  held: "held, awaiting payment",
  confirmed: "confirmed",
  checked_in: "checked in, waiting",
  admitted: "admitted",
  no_show_patient: "missed (no check-in)",
  released: "released",
  cancelled: "cancelled",
  no_show_doctor: "doctor did not attend (refunded)",
});

/** The message of a refusal (the SDK's RestError, or any error). @param {unknown} e */
function reasonOf(e) {
  const error = /** @type {any} */ (e);
  return error?.body?.error?.message ?? error?.body?.message ?? error?.message ?? String(e);
}

/** "about 5 min" @param {number} seconds */
export function waitText(seconds) {
  const minutes = Math.round(seconds / 60);
  return minutes < 1 ? "less than a minute" : `about ${minutes} min`;
}

export class AppointmentsScreen {
  /**
   * @param {Session} session
   * @param {(admitted: {conversationId: number, media: "audio" | "video" | null}) => Promise<void>} openConsultation
   *   open the admitted consultation's chat (and place the call) on the chat screen
   */
  constructor(session, openConsultation) {
    this.session = session;
    this.openConsultation = openConsultation;
    this.room = new WaitingRoom(session.client, session.rest);
    this.onDemand = new OnDemandQueue(session.client, session.rest);
    this.onDemand.on("change", () => this.renderOnDemand());
    this.doctor = session.me.role === "doctor";
    this.timeZone = localTimeZone();
    this.store = new AppointmentStore(session.client, session.rest);
    /** @type {Map<number, string>} doctor id → name (the directory) */
    this.doctorNames = new Map();
    /** @type {number | null} the appointment whose reschedule picker is open */
    this.rescheduling = null;
    this.windowCounter = 0;
    this.when = new Intl.DateTimeFormat([], {
      timeZone: this.timeZone,
      weekday: "short",
      day: "numeric",
      month: "short",
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
    });
    this.store.on("change", () => this.render());
    this.room.on("position", () => this.render());
    this.room.on("left", () => this.render());
    this.room.on("queue", () => this.renderQueue());
    byId("waiting-room-panel").hidden = !this.doctor;
    byId("on-demand-panel").hidden = !this.doctor;
    byId("appointments-title").textContent = this.doctor ? "Appointments" : "My appointments";
    byId("book-panel").hidden = this.doctor;
    byId("schedule-panel").hidden = !this.doctor;
    if (this.doctor) this.setUpSchedule();
    else this.setUpBooking();
  }

  /** Read everything the screen shows; a refusal is shown on the screen (the chat still works). */
  async load() {
    try {
      await this.onDemand.load().catch((e) => {
        byId(this.doctor ? "no-on-demand" : "on-demand-error").textContent = reasonOf(e); // e.g. not verified
      });
      this.renderOnDemand();
      await this.store.load();
      this.render();
      if (this.doctor) {
        await this.room.load();
        this.renderQueue();
        await this.loadSchedule();
      } else {
        await this.loadDoctors();
        await this.loadSpecialties();
        this.renderOnDemand();
        // Follow the place of every appointment already in the waiting room.
        for (const a of this.store.list()) {
          if (a.state === "checked_in") await this.room.loadPosition(a.id).catch(() => {});
        }
        this.render();
      }
    } catch (e) {
      byId("appointments-error").textContent = reasonOf(e);
    }
  }

  /** @param {string} iso */
  format(iso) {
    return this.when.format(new Date(iso));
  }

  // --- the list (both roles) -----------------------------------------------------------------
  render() {
    const items = this.store.list();
    byId("no-appointments").hidden = items.length > 0;
    byId("appointment-list").replaceChildren(...items.map((a) => this.row(a)));
  }

  /** @param {Appointment} a */
  row(a) {
    const label = `appointment-${a.id}`;
    const who = this.doctor ? `Patient ${a.patient_id}` : (this.doctorNames.get(a.doctor_id) ?? `Doctor ${a.doctor_id}`);
    const state = a.state ?? "held";
    const open = !FINAL_APPOINTMENT_STATES.includes(state) && state !== "admitted" && state !== "checked_in";
    const started = Date.parse(a.starts_at) <= Date.now();
    const place = state === "checked_in" ? this.room.positionOf(a.id) : undefined;
    const picker = this.rescheduling === a.id ? el("div", { class: "reschedule", id: `reschedule-${a.id}` }) : null;
    const li = el(
      "li",
      { class: "appointment", dataset: { appointmentId: String(a.id), state }, "aria-labelledby": label },
      el("p", { id: label, class: "appointment-title" }, `${this.format(a.starts_at)} · ${who} · ${a.kind}`),
      el("p", { class: "appointment-state" }, el("span", { class: `state state-${state}` }, STATE_LABELS[state] ?? state)),
      place
        ? el(
            "p",
            { class: "position", dataset: { position: String(place.position) } },
            `Position ${place.position} in the waiting room (${place.ahead} before you), estimated wait ${waitText(place.estimated_wait_seconds)}.`,
          )
        : null,
      el(
        "div",
        { class: "actions" },
        el("button", { type: "button", class: "secondary", "aria-describedby": label, onclick: () => void this.ics(a.id) }, "Download .ics"),
        state === "confirmed" && !this.doctor
          ? el("button", { type: "button", "aria-describedby": label, onclick: () => void this.checkIn(a.id) }, "Check in")
          : null,
        state === "admitted" && a.consultation_id
          ? el("button", { type: "button", "aria-describedby": label, onclick: () => void this.openChat(a) }, "Open the chat")
          : null,
        open && !started && !this.doctor
          ? el("button", { type: "button", class: "secondary", "aria-describedby": label, onclick: () => void this.openReschedule(a) }, "Reschedule")
          : null,
        open && !started
          ? el("button", { type: "button", class: "danger", "aria-describedby": label, onclick: () => void this.cancel(a.id) }, "Cancel")
          : null,
      ),
      picker,
      el("p", { class: "error", role: "alert", id: `appointment-error-${a.id}` }),
    );
    if (picker) void this.fillReschedule(a, picker);
    return li;
  }

  /** @param {number} id @param {string} text */
  rowError(id, text) {
    const node = document.getElementById(`appointment-error-${id}`);
    if (node) node.textContent = text;
  }

  /** The patient checks in (the socket frame); the place then follows live. @param {number} id */
  async checkIn(id) {
    try {
      await this.room.checkIn(id);
      this.render();
    } catch (e) {
      const opens = /** @type {any} */ (e).body?.opens_at;
      this.rowError(id, opens ? `${reasonOf(e)} (opens ${this.format(opens)})` : reasonOf(e));
    }
  }

  /** @param {Appointment} a */
  async openChat(a) {
    const consultation = await this.session.rest.GET("/api/v1/consultations/{consultation_id}", {
      params: { path: { consultation_id: /** @type {number} */ (a.consultation_id) } },
    });
    if (consultation.data) await this.openConsultation({ conversationId: consultation.data.conversation_id, media: null });
  }

  // --- doctors: the waiting room -------------------------------------------------------------
  renderQueue() {
    const queue = this.room.queue;
    byId("no-waiting").hidden = queue.length > 0;
    byId("waiting-list").replaceChildren(
      ...queue.map((entry) => {
        const label = `waiting-${entry.appointment_id}`;
        return el(
          "li",
          { class: "waiting", dataset: { appointmentId: String(entry.appointment_id), position: String(entry.position) }, "aria-labelledby": label },
          el("p", { id: label, class: "appointment-title" }, `${entry.position}. ${entry.display_name || `Patient ${entry.patient_id}`}`),
          el(
            "p",
            { class: "muted" },
            `Appointment ${this.format(entry.starts_at)} · waiting since ${this.format(entry.checked_in_at)} · estimated wait ${waitText(entry.estimated_wait_seconds)}`,
          ),
          el(
            "div",
            { class: "actions" },
            el("button", { type: "button", "aria-describedby": label, onclick: () => void this.admit(entry.appointment_id, null) }, "Admit"),
            el("button", { type: "button", class: "secondary", "aria-describedby": label, onclick: () => void this.admit(entry.appointment_id, "video") }, "Admit + video call"),
            el("button", { type: "button", class: "secondary", "aria-describedby": label, onclick: () => void this.admit(entry.appointment_id, "audio") }, "Admit + audio call"),
          ),
          el("p", { class: "error", role: "alert", id: `waiting-error-${entry.appointment_id}` }),
        );
      }),
    );
  }

  /**
   * Admit (the consultation opens), then the chat on the chat screen; with `media`, the call
   * starts there from the call screen (the SDK's CallManager).
   * @param {number} appointmentId @param {"audio" | "video" | null} media
   */
  async admit(appointmentId, media) {
    try {
      const { consultation } = await this.room.admit(appointmentId);
      await this.openConsultation({ conversationId: consultation.conversation_id, media });
    } catch (e) {
      const node = document.getElementById(`waiting-error-${appointmentId}`);
      if (node) node.textContent = reasonOf(e);
    }
  }

  /** @param {number} id */
  async cancel(id) {
    try {
      await this.store.cancel(id);
    } catch (e) {
      this.rowError(id, reasonOf(e));
    }
  }

  /** The .ics through the SDK (it needs the token), offered as a file download. @param {number} id */
  async ics(id) {
    try {
      const text = await downloadAppointmentIcs(this.session.rest, id);
      const url = URL.createObjectURL(new Blob([text], { type: "text/calendar" }));
      const link = el("a", { href: url, download: `appointment-${id}.ics`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      this.rowError(id, reasonOf(e));
    }
  }

  /** @param {Appointment} a */
  openReschedule(a) {
    this.rescheduling = this.rescheduling === a.id ? null : a.id;
    this.render();
  }

  /** @param {Appointment} a @param {HTMLElement} picker */
  async fillReschedule(a, picker) {
    picker.replaceChildren(el("p", { class: "muted" }, "Loading free slots…"));
    try {
      const from = new Date();
      const slots = await listSlots(this.session.rest, a.doctor_id, {
        start: from,
        end: new Date(from.getTime() + 13 * 86_400_000),
        timeZone: this.timeZone,
      });
      const list = el("ul", { class: "slot-list", "aria-label": `New times for appointment ${a.id}` });
      list.append(
        ...slots.slice(0, 40).map((s) =>
          el(
            "li",
            {},
            el("button", { type: "button", class: "slot", dataset: { start: s.start }, onclick: () => void this.reschedule(a.id, s.start) }, this.format(s.start)),
          ),
        ),
      );
      picker.replaceChildren(el("p", { class: "muted" }, `Move to (times in ${this.timeZone}):`), slots.length ? list : el("p", { class: "muted" }, "No free slots in the next two weeks."));
    } catch (e) {
      picker.replaceChildren(el("p", { class: "error", role: "alert" }, reasonOf(e)));
    }
  }

  /** @param {number} id @param {string} startsAt */
  async reschedule(id, startsAt) {
    try {
      this.rescheduling = null;
      await this.store.reschedule(id, startsAt);
      this.render();
    } catch (e) {
      this.render();
      this.rowError(id, reasonOf(e));
    }
  }

  // --- patients: book ------------------------------------------------------------------------
  setUpBooking() {
    byId("book-zone").textContent = `Times are in your time zone: ${this.timeZone}.`;
    const from = /** @type {HTMLInputElement} */ (byId("book-from"));
    from.value = dateIn(new Date(), this.timeZone);
    from.addEventListener("change", () => void this.loadSlots());
    byId("on-demand-ask").addEventListener("click", () => void this.askFirstAvailable());
    byId("book-doctor").addEventListener("change", () => void this.loadSlots());
  }

  // --- the on-demand queue (both roles) ------------------------------------------------------
  renderOnDemand() {
    if (this.doctor) {
      const open = this.onDemand.open();
      byId("no-on-demand").hidden = open.length > 0;
      byId("on-demand-list").replaceChildren(
        ...open.map((r) => {
          const label = `on-demand-${r.id}`;
          return el(
            "li",
            { class: "waiting", dataset: { requestId: String(r.id), state: r.state ?? "open" }, "aria-labelledby": label },
            el("p", { id: label, class: "appointment-title" }, `${r.kind} · ${r.specialty} · since ${this.format(r.created_at)}`),
            r.reason ? el("p", { class: "reason" }, r.reason) : null,
            el("div", { class: "actions" }, el("button", { type: "button", "aria-describedby": label, onclick: () => void this.acceptOnDemand(r.id) }, "Accept")),
            el("p", { class: "error", role: "alert", id: `on-demand-error-${r.id}` }),
          );
        }),
      );
      return;
    }
    const mine = this.onDemand.list().filter((r) => r.state === "open" || r.state === "accepted").reverse().slice(0, 5);
    byId("my-on-demand").replaceChildren(
      ...mine.map((r) =>
        el(
          "li",
          { class: "appointment", dataset: { requestId: String(r.id), state: r.state ?? "open" } },
          el("p", { class: "appointment-title" }, `${r.specialty} · ${r.kind} · asked ${this.format(r.created_at)}`),
          el("p", { class: "appointment-state" }, r.state === "open" ? "Waiting for a doctor…" : `Accepted by ${this.doctorNames.get(r.doctor_id ?? 0) ?? `Doctor ${r.doctor_id}`}.`),
          el(
            "div",
            { class: "actions" },
            r.state === "open" ? el("button", { type: "button", class: "danger", onclick: () => void this.withdraw(r.id) }, "Withdraw") : null,
            r.state === "accepted" && r.consultation_id
              ? el("button", { type: "button", onclick: () => void this.openConsultationOf(/** @type {number} */ (r.consultation_id)) }, "Open the chat")
              : null,
          ),
        ),
      ),
    );
  }

  async askFirstAvailable() {
    const error = byId("on-demand-error");
    error.textContent = "";
    const specialty = /** @type {HTMLSelectElement} */ (byId("on-demand-specialty")).value;
    const kind = /** @type {"chat" | "voice" | "video"} */ (/** @type {HTMLSelectElement} */ (byId("book-kind")).value);
    const reason = /** @type {HTMLInputElement} */ (byId("book-reason")).value.trim();
    try {
      await this.onDemand.request({ specialty, kind, ...(reason ? { reason } : {}) });
    } catch (e) {
      error.textContent = reasonOf(e);
    }
  }

  /** @param {number} id */
  async withdraw(id) {
    try {
      await this.onDemand.cancel(id);
    } catch (e) {
      byId("on-demand-error").textContent = reasonOf(e);
    }
  }

  /** @param {number} id */
  async acceptOnDemand(id) {
    try {
      const accepted = await this.onDemand.accept(id);
      if (accepted.consultation_id) await this.openConsultationOf(accepted.consultation_id);
    } catch (e) {
      const node = document.getElementById(`on-demand-error-${id}`);
      if (node) node.textContent = reasonOf(e);
    }
  }

  /** @param {number} consultationId */
  async openConsultationOf(consultationId) {
    const consultation = await getConsultation(this.session.rest, consultationId);
    await this.openConsultation({ conversationId: consultation.conversation_id, media: null });
  }

  async loadSpecialties() {
    const { data } = await this.session.rest.GET("/api/v1/specialties");
    const select = /** @type {HTMLSelectElement} */ (byId("on-demand-specialty"));
    select.replaceChildren(...(data?.results ?? []).map((sp) => el("option", { value: sp.slug }, sp.name)));
  }

  async loadDoctors() {
    const { data } = await this.session.rest.GET("/api/v1/doctors", { params: { query: { limit: 200 } } });
    const doctors = data?.results ?? [];
    for (const d of doctors) this.doctorNames.set(d.id, d.display_name);
    const select = /** @type {HTMLSelectElement} */ (byId("book-doctor"));
    const current = select.value;
    select.replaceChildren(
      el("option", { value: "" }, doctors.length ? "Choose a doctor" : "No doctors"),
      ...doctors.map((d) => el("option", { value: String(d.id) }, `${d.display_name} · ${d.specialty?.name ?? ""}`)),
    );
    if (current) select.value = current;
    this.render();
  }

  async loadSlots() {
    const doctorId = Number(/** @type {HTMLSelectElement} */ (byId("book-doctor")).value);
    const list = byId("slot-list");
    byId("book-error").textContent = "";
    if (!doctorId) {
      list.replaceChildren();
      byId("no-slots").hidden = true;
      return;
    }
    const start = /** @type {HTMLInputElement} */ (byId("book-from")).value || dateIn(new Date(), this.timeZone);
    const end = dateIn(new Date(Date.parse(`${start}T12:00:00Z`) + (SLOT_DAYS - 1) * 86_400_000), "UTC");
    try {
      const slots = await listSlots(this.session.rest, doctorId, { start, end, timeZone: this.timeZone });
      byId("no-slots").hidden = slots.length > 0;
      list.replaceChildren(
        ...slots.map((s) =>
          el("li", {}, el("button", { type: "button", class: "slot", dataset: { start: s.start }, onclick: () => void this.book(doctorId, s) }, this.format(s.start))),
        ),
      );
    } catch (e) {
      list.replaceChildren();
      byId("book-error").textContent = reasonOf(e);
    }
  }

  /** @param {number} doctorId @param {Slot} slot */
  async book(doctorId, slot) {
    const status = byId("book-status");
    const error = byId("book-error");
    error.textContent = "";
    status.textContent = `Booking ${this.format(slot.start)}…`;
    const kind = /** @type {"chat" | "voice" | "video"} */ (/** @type {HTMLSelectElement} */ (byId("book-kind")).value);
    const reason = /** @type {HTMLInputElement} */ (byId("book-reason")).value.trim();
    try {
      const { appointment, payment } = await bookAppointment(this.session.rest, {
        doctorId,
        startsAt: slot.start,
        kind,
        ...(reason ? { reason } : {}),
      });
      const { transitions: _t, ...row } = appointment;
      this.store.put(row);
      status.textContent =
        appointment.state === "held" && payment?.client_secret
          ? `Held until ${this.format(appointment.hold_expires_at ?? appointment.starts_at)}: authorise the payment in the healthchat app to confirm it.`
          : `Booked: ${this.format(appointment.starts_at)}.`;
    } catch (e) {
      status.textContent = "";
      error.textContent = reasonOf(e);
    }
    await this.loadSlots();
  }

  // --- doctors: the schedule and the calendar feed -------------------------------------------
  setUpSchedule() {
    byId("add-window").addEventListener("click", () => byId("weekly-hours").append(this.windowRow({ weekday: 0, start: "09:00", end: "12:00" })));
    byId("add-exception").addEventListener("click", () =>
      byId("schedule-exceptions").append(this.exceptionRow({ date: dateIn(new Date(), this.timeZone), kind: "off", start: null, end: null })),
    );
    byId("schedule-form").addEventListener("submit", (event) => {
      event.preventDefault();
      void this.saveSchedule();
    });
    byId("feed-rotate").addEventListener("click", () => void this.rotateFeed());
    byId("feed-revoke").addEventListener("click", () => void this.revokeFeed());
  }

  /** @param {{weekday: number, start: string, end: string}} w */
  windowRow(w) {
    const n = (this.windowCounter += 1);
    const day = el("select", { id: `window-day-${n}`, class: "window-day" }, ...WEEKDAYS.map((name, i) => el("option", { value: String(i) }, name)));
    /** @type {HTMLSelectElement} */ (day).value = String(w.weekday);
    return el(
      "li",
      { class: "window" },
      el("label", { for: `window-day-${n}`, class: "visually-hidden" }, `Window ${n}: day`),
      day,
      el("label", { for: `window-start-${n}`, class: "visually-hidden" }, `Window ${n}: from`),
      el("input", { type: "time", id: `window-start-${n}`, class: "window-start", value: w.start, required: true }),
      el("span", { "aria-hidden": "true" }, "–"),
      el("label", { for: `window-end-${n}`, class: "visually-hidden" }, `Window ${n}: to`),
      el("input", { type: "time", id: `window-end-${n}`, class: "window-end", value: w.end, required: true }),
      el("button", { type: "button", class: "secondary", "aria-label": `Remove window ${n}`, onclick: (/** @type {Event} */ e) => /** @type {HTMLElement} */ (e.currentTarget).closest("li")?.remove() }, "Remove"),
    );
  }

  /**
   * A day off (whole day, or the hours given) or extra hours on a date.
   * @param {{date: string, kind: string, start: string | null, end: string | null}} x
   */
  exceptionRow(x) {
    const n = (this.windowCounter += 1);
    const kind = el("select", { id: `exception-kind-${n}`, class: "exception-kind" }, el("option", { value: "off" }, "Off"), el("option", { value: "extra" }, "Extra hours"));
    /** @type {HTMLSelectElement} */ (kind).value = x.kind;
    return el(
      "li",
      { class: "exception" },
      el("label", { for: `exception-date-${n}`, class: "visually-hidden" }, `Exception ${n}: date`),
      el("input", { type: "date", id: `exception-date-${n}`, class: "exception-date", value: x.date, required: true }),
      el("label", { for: `exception-kind-${n}`, class: "visually-hidden" }, `Exception ${n}: kind`),
      kind,
      el("label", { for: `exception-start-${n}`, class: "visually-hidden" }, `Exception ${n}: from (empty: the whole day off)`),
      el("input", { type: "time", id: `exception-start-${n}`, class: "exception-start", value: x.start ?? "" }),
      el("span", { "aria-hidden": "true" }, "–"),
      el("label", { for: `exception-end-${n}`, class: "visually-hidden" }, `Exception ${n}: to`),
      el("input", { type: "time", id: `exception-end-${n}`, class: "exception-end", value: x.end ?? "" }),
      el("button", { type: "button", class: "secondary", "aria-label": `Remove exception ${n}`, onclick: (/** @type {Event} */ e) => /** @type {HTMLElement} */ (e.currentTarget).closest("li")?.remove() }, "Remove"),
    );
  }

  async loadSchedule() {
    const s = await getSchedule(this.session.rest);
    /** @param {string} id @param {unknown} value */
    const set = (id, value) => {
      /** @type {HTMLInputElement} */ (byId(id)).value = String(value ?? "");
    };
    set("schedule-tz", s.timezone);
    set("schedule-slot", s.slot_minutes);
    set("schedule-buffer", s.buffer_minutes);
    set("schedule-notice", s.min_notice_minutes);
    set("schedule-horizon", s.horizon_days);
    /** @type {HTMLInputElement} */ (byId("schedule-bookable")).checked = s.bookable ?? true;
    byId("weekly-hours").replaceChildren(
      ...s.weekly_hours.map((w) => this.windowRow(/** @type {{weekday: number, start: string, end: string}} */ (w))),
    );
    byId("schedule-exceptions").replaceChildren(
      ...s.exceptions.map((x) => this.exceptionRow(/** @type {{date: string, kind: string, start: string | null, end: string | null}} */ (x))),
    );
  }

  async saveSchedule() {
    const status = byId("schedule-status");
    const error = byId("schedule-error");
    status.textContent = "";
    error.textContent = "";
    /** @param {string} id */
    const num = (id) => Number(/** @type {HTMLInputElement} */ (byId(id)).value);
    const weeklyHours = [...byId("weekly-hours").querySelectorAll("li.window")].map((li) => ({
      weekday: Number(/** @type {HTMLSelectElement} */ (li.querySelector(".window-day")).value),
      start: /** @type {HTMLInputElement} */ (li.querySelector(".window-start")).value,
      end: /** @type {HTMLInputElement} */ (li.querySelector(".window-end")).value,
    }));
    const exceptions = [...byId("schedule-exceptions").querySelectorAll("li.exception")].map((li) => {
      const start = /** @type {HTMLInputElement} */ (li.querySelector(".exception-start")).value;
      const end = /** @type {HTMLInputElement} */ (li.querySelector(".exception-end")).value;
      return {
        date: /** @type {HTMLInputElement} */ (li.querySelector(".exception-date")).value,
        kind: /** @type {"off" | "extra"} */ (/** @type {HTMLSelectElement} */ (li.querySelector(".exception-kind")).value),
        ...(start || end ? { start, end } : {}),
      };
    });
    try {
      await setSchedule(this.session.rest, {
        timeZone: /** @type {HTMLInputElement} */ (byId("schedule-tz")).value.trim(),
        slotMinutes: num("schedule-slot"),
        bufferMinutes: num("schedule-buffer"),
        minNoticeMinutes: num("schedule-notice"),
        horizonDays: num("schedule-horizon"),
        bookable: /** @type {HTMLInputElement} */ (byId("schedule-bookable")).checked,
        weeklyHours,
        exceptions,
      });
      await this.loadSchedule();
      status.textContent = "Schedule saved.";
    } catch (e) {
      const body = /** @type {any} */ (e).body?.error;
      const fields = body?.fields ? ` (${Object.keys(body.fields).join(", ")})` : "";
      error.textContent = `${reasonOf(e)}${fields}`;
    }
  }

  async rotateFeed() {
    const out = /** @type {HTMLInputElement} */ (byId("feed-url"));
    try {
      out.value = await rotateCalendarFeed(this.session.rest);
      byId("feed-status").textContent = "New private feed URL (the previous one no longer works). Keep it secret.";
    } catch (e) {
      byId("feed-status").textContent = reasonOf(e);
    }
  }

  async revokeFeed() {
    try {
      await revokeCalendarFeed(this.session.rest);
      /** @type {HTMLInputElement} */ (byId("feed-url")).value = "";
      byId("feed-status").textContent = "Feed revoked.";
    } catch (e) {
      byId("feed-status").textContent = reasonOf(e);
    }
  }
}
