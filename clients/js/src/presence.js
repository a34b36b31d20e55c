// Presence of contacts: `presence.subscribe`, kept and sent again after every `ready` (a new socket
// watches nobody), the latest state per user. See docs/clients.md#presence--srcpresencejs.
import { Emitter } from "./emitter.js";
import { ConnectionLostError, RequestTimeoutError } from "./errors.js";

/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {{userId: number, online: boolean, lastSeen: string | null}} Presence */

const MAX_PER_REQUEST = 500;

/** @extends {Emitter<{change: Presence}>} */
export class PresenceTracker extends Emitter {
  /** @param {HealthchatClient} client */
  constructor(client) {
    super();
    this.client = client;
    /** @type {Set<number>} users to watch on every socket */
    this.watched = new Set();
    /** @type {Set<number>} users the server refused (not re-sent) */
    this.refused = new Set();
    /** @type {Map<number, Presence>} */
    this.states = new Map();
    this.unsubscribe = [
      client.on("frame", (frame) => {
        if (frame.type !== "presence") return;
        const state = { userId: frame.data.user_id, online: frame.data.online, lastSeen: frame.data.last_seen ?? null };
        this.states.set(state.userId, state);
        this.emit("change", state);
      }),
      client.on("ready", () => {
        if (this.watched.size) this.send([...this.watched]).catch((error) => this.failed(error));
      }),
    ];
  }

  /**
   * Watch these users (on this socket and every later one).
   * @param {number[]} userIds
   * @returns {Promise<{subscribed: number[], refused: number[]}>}
   */
  async subscribe(userIds) {
    const fresh = [...new Set(userIds)].filter((id) => !this.watched.has(id));
    for (const id of fresh) this.watched.add(id);
    if (!fresh.length) return { subscribed: [], refused: [] };
    return this.send(fresh);
  }

  /** @param {number[]} userIds */
  async send(userIds) {
    const subscribed = [];
    const refused = [];
    for (let i = 0; i < userIds.length; i += MAX_PER_REQUEST) {
      const ack = await this.client.request("presence.subscribe", { user_ids: userIds.slice(i, i + MAX_PER_REQUEST) });
      subscribed.push(...ack.data.subscribed);
      refused.push(...ack.data.refused);
    }
    for (const id of refused) {
      this.watched.delete(id);
      this.refused.add(id);
    }
    for (const id of subscribed) this.refused.delete(id);
    return { subscribed, refused };
  }

  /** @param {unknown} error */
  failed(error) {
    // A socket lost during the re-subscription: the next `ready` sends it again.
    if (error instanceof ConnectionLostError || error instanceof RequestTimeoutError) return;
    this.client.emit("error", /** @type {any} */ (error));
  }

  /** Stop re-sending these users after the next reconnect (the server has no unsubscribe).
   * @param {number[]} userIds */
  unsubscribeLocal(userIds) {
    for (const id of userIds) {
      this.watched.delete(id);
      this.states.delete(id);
    }
  }

  /** The latest known state of a watched user. @param {number} userId */
  get(userId) {
    return this.states.get(userId);
  }

  close() {
    for (const off of this.unsubscribe) off();
  }
}
