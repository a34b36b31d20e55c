// Consultations (request, list, accept/decline/start/complete/cancel) and the doctor's
// availability over REST, plus the live `consultation.updated` hint. See docs/payments.md.
import { cursorOf, unwrap } from "./rest.js";

/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {import("openapi-fetch").Client<import("./rest.js").paths>} RestClient */
/** @typedef {import("./rest.js").components["schemas"]} Schemas */
/** @typedef {Schemas["ConsultationOut"]} Consultation */
/** @typedef {Schemas["ConsultationDetailOut"]} ConsultationDetail */
/** @typedef {Schemas["AvailabilityOut"]} Availability */
/** @typedef {Schemas["ConsultationKindEnum"]} ConsultationKind */
/** @typedef {Schemas["ConsultationStateEnum"]} ConsultationState */
/**
 * @typedef {object} PaymentInfo  what the patient needs to authorise the payment (Stripe's client secret)
 * @property {string} provider
 * @property {string} payment_intent_id
 * @property {string | null} client_secret
 * @property {number} amount
 * @property {string} currency
 * @property {string} status
 * @property {unknown} last_payment_error
 */

/**
 * A patient requests a consultation (201 `{consultation, payment}`).
 * @param {RestClient} rest @param {{doctorId: number, kind: ConsultationKind, reason?: string}} request
 * @returns {Promise<{consultation: Consultation, payment: PaymentInfo}>}
 */
export async function requestConsultation(rest, request) {
  /** @type {Schemas["ConsultationCreateInputRequest"]} */
  const body = { doctor_id: request.doctorId, kind: request.kind };
  if (request.reason != null) body.reason = request.reason;
  const data = await unwrap(rest.POST("/api/v1/consultations", { body }));
  // The OpenAPI schema leaves this answer untyped; its shape is documented in docs/payments.md.
  return /** @type {{consultation: Consultation, payment: PaymentInfo}} */ (/** @type {unknown} */ (data));
}

/**
 * The caller's consultations, newest first (one cursor page).
 * @param {RestClient} rest
 * @param {{role?: "patient" | "doctor", state?: ConsultationState, cursor?: string, limit?: number}} [filter]
 */
export function listConsultations(rest, filter = {}) {
  /** @type {{role?: "patient" | "doctor", state?: ConsultationState, cursor?: string, limit?: number}} */
  const query = {};
  if (filter.role) query.role = filter.role;
  if (filter.state) query.state = filter.state;
  if (filter.cursor) query.cursor = filter.cursor;
  if (filter.limit != null) query.limit = filter.limit;
  return unwrap(rest.GET("/api/v1/consultations", { params: { query: /** @type {any} */ (query) } }));
}

/** @param {RestClient} rest @param {number} id @returns {Promise<ConsultationDetail>} */
export function getConsultation(rest, id) {
  return unwrap(rest.GET("/api/v1/consultations/{consultation_id}", { params: { path: { consultation_id: id } } }));
}

/** The doctor accepts (the payment is captured). @param {RestClient} rest @param {number} id @returns {Promise<ConsultationDetail>} */
export function acceptConsultation(rest, id) {
  return unwrap(rest.POST("/api/v1/consultations/{consultation_id}/accept", { params: { path: { consultation_id: id } } }));
}

/** The doctor declines (the authorisation is released).
 * @param {RestClient} rest @param {number} id @param {string} [reason] @returns {Promise<ConsultationDetail>} */
export function declineConsultation(rest, id, reason) {
  return unwrap(
    rest.POST("/api/v1/consultations/{consultation_id}/decline", {
      params: { path: { consultation_id: id } },
      body: reason != null ? { reason } : {},
    }),
  );
}

/** @param {RestClient} rest @param {number} id @returns {Promise<ConsultationDetail>} */
export function startConsultation(rest, id) {
  return unwrap(rest.POST("/api/v1/consultations/{consultation_id}/start", { params: { path: { consultation_id: id } } }));
}

/** The doctor completes it (the follow-up window starts). @param {RestClient} rest @param {number} id @returns {Promise<ConsultationDetail>} */
export function completeConsultation(rest, id) {
  return unwrap(rest.POST("/api/v1/consultations/{consultation_id}/complete", { params: { path: { consultation_id: id } } }));
}

/** @param {RestClient} rest @param {number} id @returns {Promise<ConsultationDetail>} */
export function cancelConsultation(rest, id) {
  return unwrap(rest.POST("/api/v1/consultations/{consultation_id}/cancel", { params: { path: { consultation_id: id } } }));
}

/** The doctor's own availability. @param {RestClient} rest @returns {Promise<Availability>} */
export function getAvailability(rest) {
  return unwrap(rest.GET("/api/v1/availability"));
}

/**
 * The doctor's availability switch and hours.
 * @param {RestClient} rest
 * @param {{online?: boolean, timezone?: string, outsideHours?: "refuse" | "queue", weeklyHours?: Array<{weekday: number, start: string, end: string}>}} changes
 * @returns {Promise<Availability>}
 */
export function setAvailability(rest, changes) {
  /** @type {Record<string, unknown>} */
  const body = {};
  if (changes.online != null) body.online = changes.online;
  if (changes.timezone != null) body.timezone = changes.timezone;
  if (changes.outsideHours != null) body.outside_hours = changes.outsideHours;
  if (changes.weeklyHours != null) body.weekly_hours = changes.weeklyHours;
  return unwrap(rest.PUT("/api/v1/availability", { body: /** @type {Schemas["AvailabilityInputRequest"]} */ (body) }));
}

/** A verified doctor's availability (anyone signed in). @param {RestClient} rest @param {number} doctorId @returns {Promise<Availability>} */
export function doctorAvailability(rest, doctorId) {
  return unwrap(rest.GET("/api/v1/doctors/{doctor_id}/availability", { params: { path: { doctor_id: doctorId } } }));
}

/**
 * The live `consultation.updated` frame (a hint: `getConsultation` is the truth).
 * @param {HealthchatClient} client
 * @param {(consultation: import("./generated/frames.js").ServerConsultationUpdatedData["consultation"]) => void} listener
 * @returns {() => void} unsubscribe
 */
export function onConsultationUpdated(client, listener) {
  return client.on("frame", (frame) => {
    if (frame.type === "consultation.updated") listener(frame.data.consultation);
  });
}

/** @typedef {Schemas["ReviewOut"]} Rating */
/** @typedef {Schemas["PublicReviewOut"]} PublicRating */

/**
 * The patient rates a completed consultation, once (1-5 stars, an optional comment).
 * @param {RestClient} rest @param {number} consultationId @param {{stars: number, comment?: string}} rating
 * @returns {Promise<Rating>}
 */
export function rateConsultation(rest, consultationId, rating) {
  /** @type {Schemas["ReviewCreateInputRequest"]} */
  const body = { stars: rating.stars };
  if (rating.comment != null) body.comment = rating.comment;
  return unwrap(rest.POST("/api/v1/consultations/{consultation_id}/rating", { params: { path: { consultation_id: consultationId } }, body }));
}

/** A consultation's rating (its patient or doctor). @param {RestClient} rest @param {number} consultationId @returns {Promise<Rating>} */
export function getRating(rest, consultationId) {
  return unwrap(rest.GET("/api/v1/consultations/{consultation_id}/rating", { params: { path: { consultation_id: consultationId } } }));
}

/**
 * The patient changes their rating (within `editable_until`).
 * @param {RestClient} rest @param {number} consultationId @param {{stars?: number, comment?: string}} changes
 * @returns {Promise<Rating>}
 */
export function editRating(rest, consultationId, changes) {
  /** @type {Schemas["PatchedReviewUpdateInputRequest"]} */
  const body = {};
  if (changes.stars != null) body.stars = changes.stars;
  if (changes.comment != null) body.comment = changes.comment;
  return unwrap(rest.PATCH("/api/v1/consultations/{consultation_id}/rating", { params: { path: { consultation_id: consultationId } }, body }));
}

/** The doctor replies to the rating, once. @param {RestClient} rest @param {number} consultationId @param {string} text @returns {Promise<Rating>} */
export function replyToRating(rest, consultationId, text) {
  return unwrap(
    rest.PUT("/api/v1/consultations/{consultation_id}/rating/reply", { params: { path: { consultation_id: consultationId } }, body: { text } }),
  );
}

/**
 * A doctor's visible ratings, newest first (one cursor page; no patient named).
 * @param {RestClient} rest @param {number} doctorId @param {{cursor?: string, limit?: number}} [page]
 * @returns {Promise<{results: PublicRating[], nextCursor: string | null}>}
 */
export async function doctorRatings(rest, doctorId, page = {}) {
  /** @type {{cursor?: string, limit?: number}} */
  const query = {};
  if (page.cursor != null) query.cursor = page.cursor;
  if (page.limit != null) query.limit = page.limit;
  const data = /** @type {any} */ (
    await unwrap(rest.GET("/api/v1/doctors/{doctor_id}/ratings", { params: { path: { doctor_id: doctorId }, query } }))
  );
  return { results: /** @type {PublicRating[]} */ (data.results), nextCursor: cursorOf(data.next) };
}
