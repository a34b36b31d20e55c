// Typing indicators: sending (throttled `typing` frames, an automatic stop) and receiving (who is
// typing per conversation, stale typers expired). See docs/clients.md#typing--srctypingjs.
import { Emitter } from "./emitter.js";
import { ConnectionLostError } from "./errors.js";

/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {{conversationId: number, userIds: number[]}} TypingChange */

/** @extends {Emitter<{change: TypingChange}>} */
export class TypingIndicator extends Emitter {
  /**
   * @param {HealthchatClient} client
   * @param {{resendMs?: number, idleMs?: number, expireMs?: number}} [options]
   *   resendMs: at most one `active: true` per conversation this often (default 3000);
   *   idleMs: `active: false` after this long without notify (default 5000);
   *   expireMs: a received typer without a refresh for this long is dropped (default 8000)
   */
  constructor(client, options = {}) {
    super();
    this.client = client;
    this.resendMs = options.resendMs ?? 3000;
    this.idleMs = options.idleMs ?? 5000;
    this.expireMs = options.expireMs ?? 8000;
    /** @type {Map<number, {sentAt: number, idle: ReturnType<typeof setTimeout>}>} conversations this user types in */
    this.outgoing = new Map();
    /** @type {Map<number, Map<number, ReturnType<typeof setTimeout>>>} conversation → typer → expiry */
    this.incoming = new Map();
    this.unsubscribe = [
      client.on("frame", (frame) => {
        if (frame.type === "typing") this.onTyping(frame.data.conversation_id, frame.data.user_id, frame.data.active);
      }),
      client.on("message", (m) => {
        if (m.sender_id === client.session?.user_id) this.stop(m.conversation_id);
        else this.drop(m.conversation_id, m.sender_id);
      }),
      client.on("state", (state) => {
        if (state !== "ready" && state !== "syncing") this.reset();
      }),
    ];
  }

  /** The user is typing in `conversationId` (call on every keystroke). @param {number} conversationId */
  notify(conversationId) {
    const now = Date.now();
    const current = this.outgoing.get(conversationId);
    if (current) clearTimeout(current.idle);
    const idle = setTimeout(() => this.stop(conversationId), this.idleMs);
    if (current && now - current.sentAt < this.resendMs) {
      current.idle = idle;
      return;
    }
    this.outgoing.set(conversationId, { sentAt: now, idle });
    this.send(conversationId, true);
  }

  /** The user stopped typing (sent the message, cleared the input). @param {number} conversationId */
  stop(conversationId) {
    const current = this.outgoing.get(conversationId);
    if (!current) return;
    clearTimeout(current.idle);
    this.outgoing.delete(conversationId);
    this.send(conversationId, false);
  }

  /** @param {number} conversationId @param {boolean} active */
  send(conversationId, active) {
    try {
      this.client.notify("typing", { conversation_id: conversationId, active });
    } catch (error) {
      if (!(error instanceof ConnectionLostError)) throw error; // offline: typing is ephemeral
    }
  }

  /** User ids typing in the conversation now. @param {number} conversationId @returns {number[]} */
  typers(conversationId) {
    return [...(this.incoming.get(conversationId)?.keys() ?? [])];
  }

  /** @param {number} conversationId @param {number} userId @param {boolean} active */
  onTyping(conversationId, userId, active) {
    if (!active) return this.drop(conversationId, userId);
    let typers = this.incoming.get(conversationId);
    if (!typers) this.incoming.set(conversationId, (typers = new Map()));
    const known = typers.get(userId);
    if (known) clearTimeout(known);
    typers.set(
      userId,
      setTimeout(() => this.drop(conversationId, userId), this.expireMs),
    );
    if (!known) this.changed(conversationId);
  }

  /** @param {number} conversationId @param {number} userId */
  drop(conversationId, userId) {
    const typers = this.incoming.get(conversationId);
    const timer = typers?.get(userId);
    if (!typers || timer === undefined) return;
    clearTimeout(timer);
    typers.delete(userId);
    if (!typers.size) this.incoming.delete(conversationId);
    this.changed(conversationId);
  }

  /** @param {number} conversationId */
  changed(conversationId) {
    this.emit("change", { conversationId, userIds: this.typers(conversationId) });
  }

  /** A lost socket: nobody is known to be typing any more, and our own typing state is gone. */
  reset() {
    for (const { idle } of this.outgoing.values()) clearTimeout(idle);
    this.outgoing.clear();
    for (const [conversationId, typers] of [...this.incoming]) {
      for (const timer of typers.values()) clearTimeout(timer);
      this.incoming.delete(conversationId);
      this.changed(conversationId);
    }
  }

  close() {
    for (const off of this.unsubscribe) off();
    this.reset();
  }
}
