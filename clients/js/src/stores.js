// Pluggable persistence for the client: the sync cursor, the highest delivered seq per
// conversation (the dedupe watermark) and the outbox. Every method may be async, so a store can
// sit on IndexedDB, SQLite, a file... The in-memory store keeps everything for the process's life.

/**
 * @typedef {object} OutboxItem  a message the app sent that the server has not acknowledged yet
 * @property {string} clientId          UUID, the message's idempotency key (`client_id`)
 * @property {number} conversationId
 * @property {string | null} body
 * @property {number | null} replyTo
 * @property {number[]} attachmentIds
 * @property {Array<{user_id: number, offset: number, length: number}>} [mentions]  who the text mentions (plaintext only)
 * @property {number} createdAt         ms since the epoch; the outbox is sent in this order
 */

/**
 * @typedef {object} Store
 * @property {() => Promise<string | null>} getCursor  the cursor of the last completed `sync.done`
 * @property {(cursor: string) => Promise<void>} setCursor
 * @property {(conversationId: number) => Promise<number | null>} getSeq
 *   highest seq delivered to the app in this conversation (null: conversation never seen)
 * @property {(conversationId: number, seq: number) => Promise<void>} setSeq
 * @property {(item: OutboxItem) => Promise<void>} putOutbox
 * @property {(clientId: string) => Promise<void>} deleteOutbox
 * @property {() => Promise<OutboxItem[]>} listOutbox  every pending item, oldest first
 * @property {() => Promise<void>} clear  forget everything (sign-out)
 */

/** @implements {Store} */
export class MemoryStore {
  constructor() {
    /** @type {string | null} */
    this.cursor = null;
    /** @type {Map<number, number>} */
    this.seqs = new Map();
    /** @type {Map<string, OutboxItem>} */
    this.outbox = new Map();
  }
  async getCursor() {
    return this.cursor;
  }
  /** @param {string} cursor */
  async setCursor(cursor) {
    this.cursor = cursor;
  }
  /** @param {number} conversationId */
  async getSeq(conversationId) {
    return this.seqs.get(conversationId) ?? null;
  }
  /** @param {number} conversationId @param {number} seq */
  async setSeq(conversationId, seq) {
    this.seqs.set(conversationId, seq);
  }
  /** @param {OutboxItem} item */
  async putOutbox(item) {
    this.outbox.set(item.clientId, copyItem(item));
  }
  /** @param {string} clientId */
  async deleteOutbox(clientId) {
    this.outbox.delete(clientId);
  }
  async listOutbox() {
    return [...this.outbox.values()].sort((a, b) => a.createdAt - b.createdAt).map(copyItem);
  }
  async clear() {
    this.cursor = null;
    this.seqs.clear();
    this.outbox.clear();
  }
}

/** @param {OutboxItem} item @returns {OutboxItem} */
function copyItem(item) {
  return { ...item, attachmentIds: [...item.attachmentIds] };
}
