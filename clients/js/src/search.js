// Full-text message search and "mentions of me" over REST (cursor pages). Plaintext
// conversations only: encrypted ones are the app's to search on the device. See docs/search.md.
import { cursorOf, unwrap } from "./rest.js";

/** @typedef {import("openapi-fetch").Client<import("./rest.js").paths>} RestClient */
/** @typedef {import("./client.js").AppMessage} Message */
/** @typedef {{message: Message, rank: number, snippet: Array<{text: string, match: boolean}>}} SearchHit  `snippet`: the text around the matches, in parts (`match`: a searched word) */
/** @typedef {{id: number, conversation_id: number, created_at: string, message: Message}} Mention */

/**
 * Search the messages the caller may read (best first). `since` / `until` are ISO 8601 times
 * with their offset.
 * @param {RestClient} rest
 * @param {{q: string, conversationId?: number, senderId?: number, hasAttachment?: boolean, since?: string, until?: string, cursor?: string, limit?: number}} search
 * @returns {Promise<{results: SearchHit[], nextCursor: string | null}>}
 */
export async function searchMessages(rest, search) {
  /** @type {Record<string, string | number | boolean>} */
  const query = { q: search.q };
  if (search.conversationId != null) query.conversation_id = search.conversationId;
  if (search.senderId != null) query.sender_id = search.senderId;
  if (search.hasAttachment != null) query.has_attachment = search.hasAttachment;
  if (search.since != null) query.since = search.since;
  if (search.until != null) query.until = search.until;
  if (search.cursor != null) query.cursor = search.cursor;
  if (search.limit != null) query.limit = search.limit;
  const data = /** @type {any} */ (await unwrap(rest.GET("/api/v1/search/messages", { params: { query: /** @type {any} */ (query) } })));
  return { results: /** @type {SearchHit[]} */ (data.results), nextCursor: data.next_cursor ?? null };
}

/**
 * The messages that mention the caller, newest first (one cursor page).
 * @param {RestClient} rest @param {{cursor?: string, limit?: number}} [page]
 * @returns {Promise<{results: Mention[], nextCursor: string | null}>}
 */
export async function listMentions(rest, page = {}) {
  /** @type {{cursor?: string, limit?: number}} */
  const query = {};
  if (page.cursor != null) query.cursor = page.cursor;
  if (page.limit != null) query.limit = page.limit;
  const data = /** @type {any} */ (await unwrap(rest.GET("/api/v1/mentions", { params: { query } })));
  return { results: /** @type {Mention[]} */ (data.results), nextCursor: cursorOf(data.next) };
}
