// Scheduled messages (doctors) over REST, and the live `scheduled_message.updated` hint (sent,
// failed with its `failure_code`, e.g. `consultation_closed`). See docs/protocol.md#scheduled-messages.
import { cursorOf, unwrap } from "./rest.js";

/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {import("openapi-fetch").Client<import("./rest.js").paths>} RestClient */
/** @typedef {import("./rest.js").components["schemas"]["ScheduledOut"]} ScheduledMessage */
/** @typedef {"pending" | "sent" | "failed" | "cancelled"} ScheduledState */

/**
 * Schedule a message for `sendAt` (an ISO 8601 time with its offset, or a Date). Repeating a
 * `clientId` returns the first one.
 * @param {RestClient} rest
 * @param {{conversationId: number, body: string, sendAt: string | Date, clientId?: string}} message
 * @returns {Promise<ScheduledMessage>}
 */
export function scheduleMessage(rest, message) {
  /** @type {import("./rest.js").components["schemas"]["ScheduledCreateInputRequest"]} */
  const body = { conversation_id: message.conversationId, body: message.body, send_at: isoTime(message.sendAt) };
  if (message.clientId != null) body.client_id = message.clientId;
  return unwrap(rest.POST("/api/v1/scheduled-messages", { body }));
}

/**
 * The caller's scheduled messages, newest first (one cursor page).
 * @param {RestClient} rest @param {{state?: ScheduledState, cursor?: string, limit?: number}} [filter]
 * @returns {Promise<{results: ScheduledMessage[], nextCursor: string | null}>}
 */
export async function listScheduledMessages(rest, filter = {}) {
  /** @type {{state?: ScheduledState, cursor?: string, limit?: number}} */
  const query = {};
  if (filter.state != null) query.state = filter.state;
  if (filter.cursor != null) query.cursor = filter.cursor;
  if (filter.limit != null) query.limit = filter.limit;
  const data = /** @type {any} */ (await unwrap(rest.GET("/api/v1/scheduled-messages", { params: { query } })));
  return { results: /** @type {ScheduledMessage[]} */ (data.results), nextCursor: cursorOf(data.next) };
}

/** @param {RestClient} rest @param {number} id @returns {Promise<ScheduledMessage>} */
export function getScheduledMessage(rest, id) {
  return unwrap(rest.GET("/api/v1/scheduled-messages/{scheduled_id}", { params: { path: { scheduled_id: id } } }));
}

/**
 * Change the text and/or the time of a pending one (`409 scheduled_message_not_pending` after).
 * @param {RestClient} rest @param {number} id @param {{body?: string, sendAt?: string | Date}} changes
 * @returns {Promise<ScheduledMessage>}
 */
export function editScheduledMessage(rest, id, changes) {
  /** @type {import("./rest.js").components["schemas"]["PatchedScheduledUpdateInputRequest"]} */
  const body = {};
  if (changes.body != null) body.body = changes.body;
  if (changes.sendAt != null) body.send_at = isoTime(changes.sendAt);
  return unwrap(rest.PATCH("/api/v1/scheduled-messages/{scheduled_id}", { params: { path: { scheduled_id: id } }, body }));
}

/** Cancel a pending one. @param {RestClient} rest @param {number} id @returns {Promise<ScheduledMessage>} */
export function cancelScheduledMessage(rest, id) {
  return unwrap(rest.DELETE("/api/v1/scheduled-messages/{scheduled_id}", { params: { path: { scheduled_id: id } } }));
}

/**
 * The live `scheduled_message.updated` frame (a hint: `getScheduledMessage` is the truth).
 * @param {HealthchatClient} client
 * @param {(scheduled: import("./generated/frames.js").ServerScheduledMessageUpdatedData["scheduled_message"]) => void} listener
 * @returns {() => void} unsubscribe
 */
export function onScheduledMessageUpdated(client, listener) {
  return client.on("frame", (frame) => {
    if (frame.type === "scheduled_message.updated") listener(frame.data.scheduled_message);
  });
}

/** @param {string | Date} value */
function isoTime(value) {
  return value instanceof Date ? value.toISOString() : value;
}
