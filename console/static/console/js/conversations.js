// The conversation list: every conversation of the signed-in user with its unread count and the
// peer's presence (presence.subscribe, re-sent after every reconnect).
import { byId, el, nameOf } from "./dom.js";

/** @typedef {import("./session.js").openSession} _open */
/** @typedef {Awaited<ReturnType<_open>>} Session */
/** @typedef {{id: number, kind: string, e2ee: boolean, name: string, last_seq: number, unread_count: number, read_seq: number, delivered_seq: number, members: {user_id: number, display_name: string, role: string, delivered_seq: number, read_seq: number}[]}} Conversation */

export class ConversationList {
  /** @param {Session} session @param {(c: Conversation) => void} onOpen */
  constructor(session, onOpen) {
    this.session = session;
    this.onOpen = onOpen;
    /** @type {Map<number, Conversation>} */
    this.items = new Map();
    /** @type {Map<number, {online: boolean, last_seen: string | null}>} */
    this.presence = new Map();
    /** @type {number | null} */
    this.openId = null;
    const { client } = session;
    client.on("ready", () => void this.subscribePresence());
    client.on("frame", (frame) => {
      if (frame.type === "presence") {
        const data = /** @type {any} */ (frame).data;
        this.presence.set(data.user_id, { online: data.online, last_seen: data.last_seen });
        this.render();
        document.dispatchEvent(new CustomEvent("hc:presence", { detail: data }));
      }
    });
    client.on("message", (m) => this.onMessage(m));
  }

  async load() {
    const { data } = await this.session.rest.GET("/api/v1/conversations", { params: { query: { limit: 200 } } });
    this.items = new Map((data?.results ?? []).map((c) => [c.id, /** @type {Conversation} */ (c)]));
    this.render();
    await this.subscribePresence();
  }

  /** @param {Conversation} c */
  peerOf(c) {
    return c.members.find((m) => m.user_id !== this.session.me.id) ?? c.members[0];
  }

  /** @param {Conversation} c */
  title(c) {
    return c.kind === "direct" ? nameOf(this.peerOf(c)) : c.name || `Group ${c.id}`;
  }

  async subscribePresence() {
    const ids = [...new Set([...this.items.values()].flatMap((c) => c.members.map((m) => m.user_id)))].filter(
      (id) => id !== this.session.me.id,
    );
    if (!ids.length || !this.session.client.session) return; // not authenticated yet: on "ready"
    try {
      await this.session.client.request("presence.subscribe", { user_ids: ids.slice(0, 500) });
    } catch {
      /* refused users stay unknown */
    }
  }

  /** @param {any} m */
  onMessage(m) {
    const c = this.items.get(m.conversation_id);
    if (!c) {
      void this.load(); // a new conversation
      return;
    }
    if (m.seq <= c.last_seq) return; // already counted by the list (a sync replay)
    c.last_seq = m.seq;
    if (m.sender_id !== this.session.me.id && m.conversation_id !== this.openId && m.seq > c.read_seq) {
      c.unread_count += 1;
    }
    this.render();
  }

  /** @param {number} conversationId @param {number} seq */
  markedRead(conversationId, seq) {
    const c = this.items.get(conversationId);
    if (!c) return;
    c.read_seq = Math.max(c.read_seq, seq);
    c.unread_count = 0;
    this.render();
  }

  /** @param {number} userId */
  presenceLabel(userId) {
    const p = this.presence.get(userId);
    if (!p) return "presence unknown";
    if (p.online) return "online";
    return p.last_seen ? `last seen ${new Date(p.last_seen).toLocaleString()}` : "offline";
  }

  render() {
    const list = byId("conversation-list");
    byId("no-conversations").hidden = this.items.size > 0;
    const sorted = [...this.items.values()].sort((a, b) => b.last_seq - a.last_seq || b.id - a.id);
    list.replaceChildren(
      ...sorted.map((c) => {
        const peer = this.peerOf(c);
        const online = c.kind === "direct" && this.presence.get(peer.user_id)?.online;
        const presence = c.kind === "direct" ? this.presenceLabel(peer.user_id) : `${c.members.length} members`;
        return el(
          "li",
          { dataset: { conversationId: String(c.id) } },
          el(
            "button",
            {
              type: "button",
              class: `conversation${c.id === this.openId ? " current" : ""}`,
              "aria-current": c.id === this.openId ? "true" : null,
              onclick: () => this.onOpen(c),
            },
            el("span", { class: `dot${online ? " online" : ""}`, "aria-hidden": "true" }),
            el("span", { class: "conversation-name" }, this.title(c)),
            el("span", { class: "conversation-presence", dataset: { presence: online ? "online" : "offline" } }, presence),
            c.unread_count > 0
              ? el("span", { class: "badge", dataset: { unread: String(c.unread_count) } }, `${c.unread_count} unread`)
              : null,
          ),
        );
      }),
    );
  }
}
