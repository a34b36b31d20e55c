// Reactions and pins: the `reaction.add` / `reaction.remove` and `message.pin` / `message.unpin`
// frames as promises (their ack data), and a conversation's pinned list. Others' changes arrive as
// the client's `annotation` event (live and replayed by sync). See docs/clients.md#reactions-and-pins.
import { unwrap } from "./rest.js";

/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {import("openapi-fetch").Client<import("./rest.js").paths>} RestClient */
/**
 * @typedef {object} ReactionChange  the ack of `reaction.add` / `reaction.remove`
 * @property {number} conversation_id
 * @property {number} message_id
 * @property {number} seq
 * @property {number} user_id
 * @property {string} emoji
 * @property {Array<{emoji: string, count: number, user_ids: number[]}>} reactions  the message's reactions now
 * @property {boolean} changed  false: it was already so (adding twice, removing what was not there)
 */
/**
 * @typedef {object} PinChange  the ack of `message.pin` / `message.unpin`
 * @property {number} conversation_id
 * @property {number} message_id
 * @property {number} seq
 * @property {number} user_id
 * @property {boolean} pinned
 * @property {boolean} changed
 */
/** @typedef {{message_id: number, seq: number, pinned_by: number, pinned_at: string}} Pin */

/**
 * React to a message with one emoji of the server's set (`reaction.add`); rejects with a
 * `ServerError` (`invalid_reaction`, `e2ee_reaction`, `message_not_found`...).
 * @param {HealthchatClient} client @param {number} messageId @param {string} emoji
 * @returns {Promise<ReactionChange>}
 */
export async function addReaction(client, messageId, emoji) {
  const ack = await client.request("reaction.add", { message_id: messageId, emoji });
  return /** @type {ReactionChange} */ (ack.data);
}

/**
 * Take one's reaction back (`reaction.remove`; `changed: false` when there was none).
 * @param {HealthchatClient} client @param {number} messageId @param {string} emoji
 * @returns {Promise<ReactionChange>}
 */
export async function removeReaction(client, messageId, emoji) {
  const ack = await client.request("reaction.remove", { message_id: messageId, emoji });
  return /** @type {ReactionChange} */ (ack.data);
}

/**
 * Pin a message (`message.pin`: either member of a direct conversation, a group's owner and admins;
 * `pins_full` past the limit).
 * @param {HealthchatClient} client @param {number} messageId @returns {Promise<PinChange>}
 */
export async function pinMessage(client, messageId) {
  const ack = await client.request("message.pin", { message_id: messageId });
  return /** @type {PinChange} */ (ack.data);
}

/** Unpin a message (`message.unpin`). @param {HealthchatClient} client @param {number} messageId @returns {Promise<PinChange>} */
export async function unpinMessage(client, messageId) {
  const ack = await client.request("message.unpin", { message_id: messageId });
  return /** @type {PinChange} */ (ack.data);
}

/**
 * A conversation's pinned messages (its `pinned`, first pinned first; only messages the caller
 * may read).
 * @param {RestClient} rest @param {number} conversationId @returns {Promise<Pin[]>}
 */
export async function listPins(rest, conversationId) {
  const conversation = await unwrap(
    rest.GET("/api/v1/conversations/{conversation_id}", { params: { path: { conversation_id: conversationId } } }),
  );
  return /** @type {Pin[]} */ (/** @type {unknown} */ (conversation.pinned ?? []));
}
