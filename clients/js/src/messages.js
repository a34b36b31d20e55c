// Edits, deletions, REST history pages and a per-conversation Timeline that merges history pages,
// live and synced messages and updates (one entry per seq). See docs/clients.md.
import { Emitter } from "./emitter.js";
import { unwrap } from "./rest.js";

/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {import("./client.js").Message} Message */
/** @typedef {import("openapi-fetch").Client<import("./rest.js").paths>} RestClient */

/**
 * Replace the text of one's own message (`message.edit`); resolves with the updated message.
 * @param {HealthchatClient} client @param {number} messageId @param {string} body
 * @returns {Promise<Message>}
 */
export async function editMessage(client, messageId, body) {
  const ack = await client.request("message.edit", { message_id: messageId, body });
  return ack.data.message;
}

/**
 * Unsend one's own message (`message.delete`); resolves with it (`deleted: true`, `body: ""`).
 * @param {HealthchatClient} client @param {number} messageId
 * @returns {Promise<Message>}
 */
export async function deleteMessage(client, messageId) {
  const ack = await client.request("message.delete", { message_id: messageId });
  return ack.data.message;
}

/**
 * One page of history, ascending by seq (`GET /api/v1/conversations/{id}/messages`): no bound →
 * the latest page; `beforeSeq` pages back, `afterSeq` forward.
 * @param {RestClient} rest @param {number} conversationId
 * @param {{beforeSeq?: number, afterSeq?: number, limit?: number, deviceId?: number}} [page]
 * @returns {Promise<{messages: Message[], hasMore: boolean}>}
 */
export async function historyPage(rest, conversationId, page = {}) {
  /** @type {{before_seq?: number, after_seq?: number, limit?: number, device_id?: number}} */
  const query = {};
  if (page.beforeSeq != null) query.before_seq = page.beforeSeq;
  if (page.afterSeq != null) query.after_seq = page.afterSeq;
  if (page.limit != null) query.limit = page.limit;
  if (page.deviceId != null) query.device_id = page.deviceId;
  const data = await unwrap(
    rest.GET("/api/v1/conversations/{conversation_id}/messages", {
      params: { path: { conversation_id: conversationId }, query },
    }),
  );
  // The REST and the socket message share one wire shape (server: frames.message_wire).
  return { messages: /** @type {Message[]} */ (/** @type {unknown} */ (data.results)), hasMore: data.has_more };
}

/**
 * A conversation's messages for a chat screen: REST pages and the client's `message` /
 * `messageUpdated` events merged, one entry per seq, sorted; an update replaces by id.
 * @extends {Emitter<{change: {messages: Message[]}}>}
 */
export class Timeline extends Emitter {
  /** @param {HealthchatClient} client @param {RestClient} rest @param {number} conversationId
   * @param {{pageSize?: number}} [options] */
  constructor(client, rest, conversationId, options = {}) {
    super();
    this.client = client;
    this.rest = rest;
    this.conversationId = conversationId;
    this.pageSize = options.pageSize ?? 50;
    /** @type {Map<number, Message>} by seq */
    this.bySeq = new Map();
    /** whether older pages may exist before the oldest loaded seq */
    this.hasOlder = true;
    this.unsubscribe = [
      client.on("message", (m) => {
        if (m.conversation_id === conversationId) this.merge([m]);
      }),
      client.on("messageUpdated", (m) => {
        if (m.conversation_id === conversationId) this.merge([m]);
      }),
    ];
  }

  /** Sorted by seq. @returns {Message[]} */
  get messages() {
    return [...this.bySeq.values()].sort((a, b) => a.seq - b.seq);
  }

  /** @param {Message[]} messages */
  merge(messages) {
    let changed = false;
    for (const message of messages) {
      const known = this.bySeq.get(message.seq);
      // A page fetched before an edit must not undo it: keep the newer state.
      if (known && !newer(message, known)) continue;
      this.bySeq.set(message.seq, message);
      changed = true;
    }
    if (changed) this.emit("change", { messages: this.messages });
  }

  /** The latest page. */
  async loadLatest() {
    const page = await historyPage(this.rest, this.conversationId, { limit: this.pageSize });
    if (!this.bySeq.size) this.hasOlder = page.hasMore;
    this.merge(page.messages);
    return page.messages.length;
  }

  /** Load the page before the oldest loaded message; resolves false once nothing older is left. */
  async loadOlder() {
    if (!this.bySeq.size) {
      await this.loadLatest();
      return this.hasOlder;
    }
    const oldest = Math.min(...this.bySeq.keys());
    if (oldest <= 1) return (this.hasOlder = false);
    const page = await historyPage(this.rest, this.conversationId, { beforeSeq: oldest, limit: this.pageSize });
    this.hasOlder = page.hasMore;
    this.merge(page.messages);
    return page.messages.length > 0 && this.hasOlder;
  }

  close() {
    for (const off of this.unsubscribe) off();
  }
}

/** Whether `a` is at least as recent a state of the message as `b` (deletion and edits only go
 * forward). @param {Message} a @param {Message} b */
function newer(a, b) {
  if (b.deleted && !a.deleted) return false;
  if (a.deleted && !b.deleted) return true;
  return (a.edited_at ?? "") >= (b.edited_at ?? "");
}
