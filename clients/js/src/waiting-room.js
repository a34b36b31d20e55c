// The waiting room (issue 22): the patient checks in (socket frame `appointment.check_in`, or
// REST) and follows their place (`waiting_room.position`); the doctor follows the queue
// (`waiting_room.updated`) and admits (`waiting_room.admit`: the consultation opens; a call can
// start with it). The frames are hints, not replayed: each carries `as_of` and only a newer one
// replaces what is known; after every reconnect the room reads REST again. See
// docs/appointments.md#the-waiting-room and docs/clients.md#the-waiting-room--srcwaiting-roomjs.
import { Emitter } from "./emitter.js";
import { ConnectionLostError, RequestTimeoutError, RestError } from "./errors.js";
import { unwrap } from "./rest.js";

/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {import("openapi-fetch").Client<import("./rest.js").paths>} RestClient */
/** @typedef {import("./rest.js").components["schemas"]} Schemas */
/** @typedef {import("./generated/frames.js").ServerWaitingPosition} WaitingPosition */
/** @typedef {import("./generated/frames.js").ServerWaitingRoomData} WaitingRoomData */
/** @typedef {import("./generated/frames.js").ServerWaitingEntry} WaitingEntry */
/** @typedef {import("./generated/frames.js").ServerAppointmentSummary} AppointmentSummary */
/** @typedef {import("./generated/frames.js").ServerCheckInAck} CheckInResult */
/** @typedef {import("./generated/frames.js").ServerAdmitAck} AdmitResult */
/** @typedef {import("./calls.js").CallManager} CallManager */
/** @typedef {import("./call-session.js").CallSession} CallSession */

/** Appointment states in which the patient is no longer waiting. */
const NOT_WAITING = new Set(["admitted", "cancelled", "released", "no_show_doctor", "no_show_patient"]);

/** @param {string} a @param {string} b a is strictly newer than b */
const newer = (a, b) => Date.parse(a) > Date.parse(b);

/**
 * @typedef {object} WaitingRoomEvents
 * @property {WaitingRoomData} queue            the doctor's queue changed (newest `as_of` only)
 * @property {WaitingPosition} position         a waiting patient's place or estimate changed
 * @property {{appointmentId: number, state: string}} left  a followed appointment stopped waiting (admitted, cancelled, a no-show)
 */

/** @extends {Emitter<WaitingRoomEvents>} */
export class WaitingRoom extends Emitter {
  /** @param {HealthchatClient} client @param {RestClient} rest */
  constructor(client, rest) {
    super();
    this.client = client;
    this.rest = rest;
    /** @type {WaitingRoomData | null} the doctor's queue (after `load()` or a frame) */
    this.room = null;
    this.followQueue = false;
    /** @type {Map<number, WaitingPosition>} the patient's places, by appointment */
    this.positions = new Map();
    this.unsubscribe = [
      client.on("frame", (frame) => {
        if (frame.type === "waiting_room.updated") this.setRoom(frame.data);
        else if (frame.type === "waiting_room.position") this.setPosition(frame.data);
        else if (frame.type === "appointment.updated") this.appointmentMoved(frame.data.appointment);
      }),
      client.on("ready", () => {
        this.refresh().catch((error) => client.emit("error", error));
      }),
    ];
  }

  /** The doctor's queue in order (position 1 first). @returns {WaitingEntry[]} */
  get queue() {
    return this.room?.queue ?? [];
  }

  /** @param {WaitingRoomData} data */
  setRoom(data) {
    if (this.room && !newer(data.as_of, this.room.as_of)) return;
    this.room = data;
    this.emit("queue", data);
  }

  /** @param {WaitingPosition} data */
  setPosition(data) {
    const known = this.positions.get(data.appointment_id);
    if (known && !newer(data.as_of, known.as_of)) return;
    this.positions.set(data.appointment_id, data);
    this.emit("position", data);
  }

  /** @param {AppointmentSummary} appointment */
  appointmentMoved(appointment) {
    if (!this.positions.has(appointment.id) || !NOT_WAITING.has(appointment.state)) return;
    this.positions.delete(appointment.id);
    this.emit("left", { appointmentId: appointment.id, state: appointment.state });
  }

  /** The patient's latest known place for an appointment. @param {number} appointmentId */
  positionOf(appointmentId) {
    return this.positions.get(appointmentId);
  }

  // --- the doctor ----------------------------------------------------------------------------
  /** Read the doctor's queue (and follow it: read again after every reconnect). */
  async load() {
    this.followQueue = true;
    const data = await unwrap(this.rest.GET("/api/v1/waiting-room"));
    this.setRoom(/** @type {WaitingRoomData} */ (/** @type {unknown} */ (data)));
    return this.queue;
  }

  /**
   * Admit a checked-in patient (in any order): the appointment becomes `admitted`, its
   * consultation is accepted (the payment captured) and started: the chat is open.
   * - `call: {manager, media}`: then a call starts on the consultation's conversation through the
   *   app's `CallManager` (resolves with its `CallSession` as `session`; a call that cannot start
   *   leaves the admission standing, its error in `callError`).
   * - `startCall` + `sdp`: the server starts the call from this socket with an offer the app made
   *   itself (the ack's `call`/`call_error`), for apps that drive their own RTCPeerConnection.
   * Refusals (`ServerError`): `patient_not_waiting`, `not_the_doctor`, `appointment_closed`...
   * @param {number} appointmentId
   * @param {{call?: {manager: CallManager, media: "audio" | "video"} & Record<string, any>, startCall?: "audio" | "video", sdp?: string}} [options]
   * @returns {Promise<AdmitResult & {session?: CallSession, callError?: Error}>}
   */
  async admit(appointmentId, options = {}) {
    /** @type {Record<string, unknown>} */
    const data = { appointment_id: appointmentId };
    if (options.startCall) {
      data.start_call = options.startCall;
      data.sdp = options.sdp;
    }
    /** @type {AdmitResult} */
    const result = (await this.client.request("waiting_room.admit", data)).data;
    this.appointmentMoved(result.appointment);
    if (!options.call) return result;
    const { manager, ...callOptions } = options.call;
    try {
      const session = await manager.call(result.consultation.conversation_id, callOptions);
      return { ...result, session };
    } catch (error) {
      return { ...result, callError: /** @type {Error} */ (error) };
    }
  }

  /** Admit over REST (no call). @param {number} appointmentId */
  admitOverRest(appointmentId) {
    return unwrap(this.rest.POST("/api/v1/appointments/{appointment_id}/admit", { params: { path: { appointment_id: appointmentId } } }));
  }

  // --- the patient ---------------------------------------------------------------------------
  /**
   * Check in (the socket frame): the appointment `checked_in` and the place in the queue, which
   * is then followed (`position` events) until the patient is admitted (`left`). Refusals
   * (`ServerError`): `check_in_too_early` (`body.opens_at`), `check_in_closed`,
   * `appointment_not_confirmed`, `already_admitted`, `appointment_closed`, `not_the_patient`.
   * @param {number} appointmentId @returns {Promise<CheckInResult>}
   */
  async checkIn(appointmentId) {
    /** @type {CheckInResult} */
    const result = (await this.client.request("appointment.check_in", { appointment_id: appointmentId })).data;
    if (result.position) this.setPosition(result.position);
    return result;
  }

  /** The same over REST (e.g. before the socket is up). @param {number} appointmentId */
  async checkInOverRest(appointmentId) {
    const result = await unwrap(
      this.rest.POST("/api/v1/appointments/{appointment_id}/check-in", { params: { path: { appointment_id: appointmentId } } }),
    );
    if (result.position) this.setPosition(/** @type {WaitingPosition} */ (result.position));
    return result;
  }

  /**
   * Read the patient's place (REST; `not_waiting` once admitted). @param {number} appointmentId
   * @returns {Promise<WaitingPosition>}
   */
  async loadPosition(appointmentId) {
    const data = /** @type {WaitingPosition} */ (
      /** @type {unknown} */ (
        await unwrap(this.rest.GET("/api/v1/appointments/{appointment_id}/position", { params: { path: { appointment_id: appointmentId } } }))
      )
    );
    this.setPosition(data);
    return data;
  }

  /** After a reconnect: what changed while the socket was away (frames are not replayed). */
  async refresh() {
    if (this.followQueue) await this.load();
    for (const id of [...this.positions.keys()]) {
      try {
        await this.loadPosition(id);
      } catch (error) {
        if (error instanceof RestError && (error.code === "not_waiting" || error.code === "appointment_not_found")) {
          this.positions.delete(id);
          this.emit("left", { appointmentId: id, state: error.code });
        } else if (!(error instanceof ConnectionLostError) && !(error instanceof RequestTimeoutError)) throw error;
      }
    }
  }

  close() {
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
  }
}
