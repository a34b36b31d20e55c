// Receipt state per conversation: every other member's delivered/read cursor (REST, then live and
// replayed `receipt` frames), this user's own read cursor, the unread count, and automatic
// `message.delivered` receipts. See docs/clients.md#receipts--srcreceiptsjs.
import { Emitter } from "./emitter.js";
import { ConnectionLostError, RequestTimeoutError } from "./errors.js";
import { unwrap } from "./rest.js";

/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {import("./client.js").Message} Message */
/** @typedef {import("./client.js").ReceiptData} ReceiptData */
/** @typedef {import("openapi-fetch").Client<import("./rest.js").paths>} RestClient */
/** @typedef {{deliveredSeq: number | null, readSeq: number | null}} Cursor */
/** @typedef {"sent" | "delivered" | "read"} ReceiptStatus */

/**
 * @typedef {object} ConversationReceipts
 * @property {Map<number, Cursor>} members   other members' cursors (null: hidden by a block)
 * @property {number} readSeq                this user's read cursor
 * @property {number} deliveredSeq           this user's delivered cursor
 * @property {number} lastSeq                highest seq known
 */

/** @extends {Emitter<{change: {conversationId: number, userId: number | null}}>} */
export class ReceiptTracker extends Emitter {
  /**
   * @param {HealthchatClient} client @param {RestClient} rest
   * @param {{autoDelivered?: boolean, deliveredDelayMs?: number}} [options]
   */
  constructor(client, rest, options = {}) {
    super();
    this.client = client;
    this.rest = rest;
    this.autoDelivered = options.autoDelivered ?? true;
    this.deliveredDelayMs = options.deliveredDelayMs ?? 250;
    /** @type {Map<number, ConversationReceipts>} */
    this.conversations = new Map();
    /** @type {Map<number, ReturnType<typeof setTimeout>>} */
    this.deliveredTimers = new Map();
    this.unsubscribe = [
      client.on("receipt", (r) => this.onReceipt(r)),
      client.on("message", (m) => this.onMessage(m)),
    ];
  }

  /** @param {number} conversationId @returns {ConversationReceipts} */
  entry(conversationId) {
    let entry = this.conversations.get(conversationId);
    if (!entry) {
      entry = { members: new Map(), readSeq: 0, deliveredSeq: 0, lastSeq: 0 };
      this.conversations.set(conversationId, entry);
    }
    return entry;
  }

  /** The conversation's cursors from the server (`GET /api/v1/conversations/{id}`).
   * @param {number} conversationId */
  async load(conversationId) {
    const conversation = await unwrap(
      this.rest.GET("/api/v1/conversations/{conversation_id}", { params: { path: { conversation_id: conversationId } } }),
    );
    this.apply(conversation);
    return conversation;
  }

  /** Take the cursors of a conversation object the app already fetched (list or detail).
   * @param {import("./rest.js").components["schemas"]["ConversationOut"]} conversation */
  apply(conversation) {
    const entry = this.entry(conversation.id);
    const me = this.client.session?.user_id;
    entry.readSeq = Math.max(entry.readSeq, conversation.read_seq);
    entry.deliveredSeq = Math.max(entry.deliveredSeq, conversation.delivered_seq);
    entry.lastSeq = Math.max(entry.lastSeq, conversation.last_seq);
    const members = /** @type {Array<{user_id: number, delivered_seq: number | null, read_seq: number | null}>} */ (
      conversation.members
    );
    for (const member of members) {
      if (member.user_id === me) continue;
      const known = entry.members.get(member.user_id);
      entry.members.set(member.user_id, {
        deliveredSeq: maxNullable(known?.deliveredSeq ?? null, member.delivered_seq),
        readSeq: maxNullable(known?.readSeq ?? null, member.read_seq),
      });
    }
    this.emit("change", { conversationId: conversation.id, userId: null });
  }

  /** @param {ReceiptData} receipt */
  onReceipt(receipt) {
    const entry = this.entry(receipt.conversation_id);
    if (receipt.user_id === this.client.session?.user_id) {
      // This user's other device read or received.
      if (receipt.read_seq != null) entry.readSeq = Math.max(entry.readSeq, receipt.read_seq);
      if (receipt.delivered_seq != null) entry.deliveredSeq = Math.max(entry.deliveredSeq, receipt.delivered_seq);
    } else {
      const known = entry.members.get(receipt.user_id) ?? { deliveredSeq: null, readSeq: null };
      entry.members.set(receipt.user_id, {
        deliveredSeq: maxNullable(known.deliveredSeq, receipt.delivered_seq ?? null),
        readSeq: maxNullable(known.readSeq, receipt.read_seq ?? null),
      });
    }
    this.emit("change", { conversationId: receipt.conversation_id, userId: receipt.user_id });
  }

  /** @param {Message} message */
  onMessage(message) {
    const entry = this.entry(message.conversation_id);
    entry.lastSeq = Math.max(entry.lastSeq, message.seq);
    const mine = message.sender_id === this.client.session?.user_id;
    if (mine) {
      // The server moves the sender's cursors to their own message.
      entry.readSeq = Math.max(entry.readSeq, message.seq);
      entry.deliveredSeq = Math.max(entry.deliveredSeq, message.seq);
    } else if (this.autoDelivered) {
      this.scheduleDelivered(message.conversation_id);
    }
    this.emit("change", { conversationId: message.conversation_id, userId: mine ? message.sender_id : null });
  }

  /** @param {number} conversationId */
  scheduleDelivered(conversationId) {
    if (this.deliveredTimers.has(conversationId)) return;
    const timer = setTimeout(() => {
      this.deliveredTimers.delete(conversationId);
      const entry = this.entry(conversationId);
      if (entry.lastSeq <= entry.deliveredSeq) return;
      const seq = entry.lastSeq;
      this.client.markDelivered(conversationId, seq).then(
        () => {
          entry.deliveredSeq = Math.max(entry.deliveredSeq, seq);
        },
        (error) => {
          // Offline: the next message (or the next sync's replay) schedules it again.
          if (!(error instanceof ConnectionLostError) && !(error instanceof RequestTimeoutError)) this.client.emit("error", error);
        },
      );
    }, this.deliveredDelayMs);
    this.deliveredTimers.set(conversationId, timer);
  }

  /**
   * This user has read up to `seq` (default: the highest seq known): `message.read`.
   * @param {number} conversationId @param {number} [seq]
   */
  async markRead(conversationId, seq) {
    const entry = this.entry(conversationId);
    const upTo = seq ?? entry.lastSeq;
    const ack = await this.client.markRead(conversationId, upTo);
    entry.readSeq = Math.max(entry.readSeq, ack.data.read_seq ?? upTo);
    entry.deliveredSeq = Math.max(entry.deliveredSeq, entry.readSeq);
    this.emit("change", { conversationId, userId: this.client.session?.user_id ?? null });
    return entry.readSeq;
  }

  /** Messages after this user's read cursor (never negative). @param {number} conversationId */
  unreadCount(conversationId) {
    const entry = this.conversations.get(conversationId);
    return entry ? Math.max(0, entry.lastSeq - entry.readSeq) : 0;
  }

  /** Other members' cursors. @param {number} conversationId @returns {Map<number, Cursor>} */
  cursors(conversationId) {
    return new Map(this.conversations.get(conversationId)?.members ?? []);
  }

  /**
   * Where a message stands with the other members: `read` when every other member (whose
   * cursors are visible) read it, `delivered` when every one has it, else `sent`.
   * @param {number} conversationId @param {number} seq @returns {ReceiptStatus}
   */
  statusOf(conversationId, seq) {
    const members = [...(this.conversations.get(conversationId)?.members.values() ?? [])].filter(
      (c) => c.deliveredSeq !== null || c.readSeq !== null,
    );
    if (!members.length) return "sent";
    if (members.every((c) => (c.readSeq ?? 0) >= seq)) return "read";
    if (members.every((c) => Math.max(c.deliveredSeq ?? 0, c.readSeq ?? 0) >= seq)) return "delivered";
    return "sent";
  }

  close() {
    for (const off of this.unsubscribe) off();
    for (const timer of this.deliveredTimers.values()) clearTimeout(timer);
    this.deliveredTimers.clear();
  }
}

/** @param {number | null} a @param {number | null} b */
function maxNullable(a, b) {
  if (a === null) return b;
  if (b === null) return a;
  return Math.max(a, b);
}
