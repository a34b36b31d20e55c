// The on-demand queue by specialty (issue 22): a patient asks for "the first available doctor"
// of a specialty; the doctors who can take it see it live (`on_demand.updated`); exactly one
// acceptance wins and opens the consultation (paid as any consultation). See
// docs/appointments.md and docs/clients.md#on-demand-queue--srcon-demandjs.
import { Emitter } from "./emitter.js";
import { RequestTimeoutError } from "./errors.js";
import { unwrap } from "./rest.js";

/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {import("openapi-fetch").Client<import("./rest.js").paths>} RestClient */
/** @typedef {import("./rest.js").components["schemas"]} Schemas */
/** @typedef {Schemas["OnDemandOut"]} OnDemandRequest */
/** @typedef {import("./generated/frames.js").ServerOnDemandSummary} OnDemandSummary */

/**
 * A patient asks for the first available doctor of a specialty (`GET /api/v1/specialties` lists
 * the slugs). Refusals (`RestError`): `request_open` (one open request at a time),
 * `unknown_specialty`, `patients_only`, `reason_too_long`.
 * @param {RestClient} rest
 * @param {{specialty: string, kind: "chat" | "voice" | "video", reason?: string}} request
 * @returns {Promise<OnDemandRequest>}
 */
export function requestFirstAvailable(rest, request) {
  /** @type {Schemas["OnDemandCreateInputRequest"]} */
  const body = { specialty: request.specialty, kind: request.kind };
  if (request.reason != null) body.reason = request.reason;
  return unwrap(rest.POST("/api/v1/on-demand", { body }));
}

/**
 * A patient's own requests (newest first), or a doctor's queue (the open requests of their
 * specialty, oldest first) then the ones they accepted. At most 100.
 * @param {RestClient} rest @returns {Promise<OnDemandRequest[]>}
 */
export function listOnDemand(rest) {
  return unwrap(rest.GET("/api/v1/on-demand"));
}

/** @param {RestClient} rest @param {number} id @returns {Promise<OnDemandRequest>} */
export function getOnDemand(rest, id) {
  return unwrap(rest.GET("/api/v1/on-demand/{request_id}", { params: { path: { request_id: id } } }));
}

/**
 * A doctor takes a request: exactly one acceptance wins (`request_taken` for the others,
 * `request_closed` once cancelled or expired); the winner's consultation opens at their price.
 * @param {RestClient} rest @param {number} id @returns {Promise<OnDemandRequest>}
 */
export function acceptOnDemand(rest, id) {
  return unwrap(rest.POST("/api/v1/on-demand/{request_id}/accept", { params: { path: { request_id: id } } }));
}

/** The patient withdraws their open request. @param {RestClient} rest @param {number} id @returns {Promise<OnDemandRequest>} */
export function cancelOnDemand(rest, id) {
  return unwrap(rest.POST("/api/v1/on-demand/{request_id}/cancel", { params: { path: { request_id: id } } }));
}

/**
 * The live `on_demand.updated` hint (opened, accepted, cancelled, expired; never the reason).
 * @param {HealthchatClient} client @param {(request: OnDemandSummary) => void} listener
 * @returns {() => void} unsubscribe
 */
export function onOnDemandUpdated(client, listener) {
  return client.on("frame", (frame) => {
    if (frame.type === "on_demand.updated") listener(frame.data.request);
  });
}

/**
 * The caller's on-demand requests kept current: `load()` reads them (and again after every
 * reconnect: frames are not replayed), each `on_demand.updated` updates one at once (a request
 * new to the queue is then read with `getOnDemand`, for its reason). A doctor's
 * `open()` is their live queue (oldest first); a patient waits with `waitFor`.
 * @extends {Emitter<{change: OnDemandRequest}>}
 */
export class OnDemandQueue extends Emitter {
  /** @param {HealthchatClient} client @param {RestClient} rest */
  constructor(client, rest) {
    super();
    this.client = client;
    this.rest = rest;
    /** @type {Map<number, OnDemandRequest>} */
    this.items = new Map();
    this.unsubscribe = [
      onOnDemandUpdated(client, (summary) => {
        const known = this.items.get(summary.id);
        // At once from the frame; a request new to this queue is then read (the frame has no reason).
        this.put(/** @type {OnDemandRequest} */ ({ reason: "", ended_at: null, ...known, ...summary }));
        if (!known && summary.state === "open") {
          getOnDemand(rest, summary.id).then(
            (full) => this.put(full),
            () => {}, // taken or gone meanwhile: the next frame tells
          );
        }
      }),
      client.on("ready", () => {
        this.load().catch((error) => client.emit("error", error));
      }),
    ];
  }

  async load() {
    for (const item of await listOnDemand(this.rest)) this.put(item);
    return this.list();
  }

  /** @param {OnDemandRequest} item */
  put(item) {
    const known = this.items.get(item.id);
    const merged = { ...known, ...item };
    if (known && JSON.stringify(known) === JSON.stringify(merged)) return;
    this.items.set(item.id, merged);
    this.emit("change", merged);
  }

  /** @param {number} id */
  get(id) {
    return this.items.get(id);
  }

  /** Every request known, oldest first. */
  list() {
    return [...this.items.values()].sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at));
  }

  /** The open requests (a doctor's queue), oldest first. */
  open() {
    return this.list().filter((r) => r.state === "open");
  }

  /** @param {{specialty: string, kind: "chat" | "voice" | "video", reason?: string}} request */
  async request(request) {
    const created = await requestFirstAvailable(this.rest, request);
    this.put(created);
    return created;
  }

  /** @param {number} id */
  async accept(id) {
    const accepted = await acceptOnDemand(this.rest, id);
    this.put(accepted);
    return accepted;
  }

  /** @param {number} id */
  async cancel(id) {
    const cancelled = await cancelOnDemand(this.rest, id);
    this.put(cancelled);
    return cancelled;
  }

  /**
   * Resolve once the request is no longer `open` (accepted: `doctor_id` and `consultation_id`
   * are set; or cancelled, expired). Also read over REST every `pollMs` (a missed frame).
   * @param {number} id @param {{timeoutMs?: number, pollMs?: number}} [options]
   * @returns {Promise<OnDemandRequest>}
   */
  waitFor(id, options = {}) {
    const timeoutMs = options.timeoutMs ?? 600_000;
    const pollMs = options.pollMs ?? 5000;
    return new Promise((resolve, reject) => {
      /** @param {OnDemandRequest} r */
      const check = (r) => {
        if (r.id !== id || r.state === "open") return;
        done();
        resolve(r);
      };
      const off = this.on("change", check);
      const poller = setInterval(() => {
        getOnDemand(this.rest, id).then(
          (r) => this.put(r),
          () => {},
        );
      }, pollMs);
      const timer = setTimeout(() => {
        done();
        reject(new RequestTimeoutError(`on-demand request ${id} still open after ${timeoutMs} ms`));
      }, timeoutMs);
      function done() {
        off();
        clearInterval(poller);
        clearTimeout(timer);
      }
      const known = this.items.get(id);
      if (known) check(known);
    });
  }

  close() {
    for (const off of this.unsubscribe) off();
    this.unsubscribe = [];
  }
}
