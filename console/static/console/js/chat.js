// The chat screen: history (latest page, then older pages on demand), the live timeline from the
// SDK (exactly once, in seq order), own messages' status (sending → sent → delivered → read from
// the other members' receipts), typing, and attachments with previews.
import { uploadAttachment } from "@healthchat/client";
import { byId, el, nameOf, sizeOf, timeOf } from "./dom.js";
import { callSummary } from "./calls.js";

/** @typedef {import("./conversations.js").Conversation} Conversation */
/** @typedef {import("./conversations.js").Session} Session */

const TYPING_SEND_EVERY_MS = 3000;
const TYPING_IDLE_MS = 4000;
const TYPING_SHOW_MS = 6000;

export class ChatView {
  /** @param {Session} session @param {import("./conversations.js").ConversationList} list */
  constructor(session, list) {
    this.session = session;
    this.list = list;
    /** @type {Conversation | null} */
    this.conv = null;
    /** @type {Map<number, any>} stored messages of the open conversation, by seq */
    this.messages = new Map();
    /** @type {Map<number, {delivered: number, read: number}>} other members' receipt cursors */
    this.cursors = new Map();
    this.typingSentAt = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.typingIdle = null;
    /** @type {Map<number, ReturnType<typeof setTimeout>>} */
    this.typers = new Map();
    /** @type {Map<number, Promise<any>>} attachment links, by id */
    this.links = new Map();
    const { client } = session;
    client.on("message", (m) => this.onMessage(m));
    client.on("messageUpdated", (m) => this.onMessage(m));
    client.on("status", (s) => this.onStatus(s));
    client.on("receipt", (r) => this.onReceipt(r));
    client.on("frame", (frame) => {
      if (frame.type === "typing") this.onTyping(/** @type {any} */ (frame).data);
    });
    client.on("ready", () => {
      if (this.conv) void this.readUpTo(this.lastSeq());
    });
    byId("load-older").addEventListener("click", () => void this.loadOlder());
    byId("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      void this.submit();
    });
    const input = /** @type {HTMLTextAreaElement} */ (byId("message-input"));
    input.addEventListener("input", () => this.typing(input.value.length > 0));
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        void this.submit();
      }
    });
  }

  /** @param {Conversation} conv */
  async open(conv) {
    this.stopTyping();
    this.conv = conv;
    this.messages.clear();
    this.cursors = new Map(
      conv.members
        .filter((m) => m.user_id !== this.session.me.id)
        .map((m) => [m.user_id, { delivered: m.delivered_seq, read: m.read_seq }]),
    );
    this.list.openId = conv.id;
    this.list.render();
    byId("chat-title").textContent = this.list.title(conv);
    byId("chat-body").hidden = false;
    byId("messages").replaceChildren();
    byId("typing").textContent = "";
    byId("chat-error").textContent = "";
    byId("encrypted-note").hidden = !conv.e2ee;
    byId("composer").hidden = conv.e2ee;
    this.showPresence();
    document.dispatchEvent(new CustomEvent("hc:conversation", { detail: { conversation: conv, session: this.session } }));
    if (conv.e2ee) return;
    const page = await this.history({});
    this.insert(page);
    byId("load-older").hidden = page.length === 0 || page[0].seq <= 1;
    await this.readUpTo(this.lastSeq());
    /** @type {HTMLTextAreaElement} */ (byId("message-input")).focus();
  }

  /** @param {{before_seq?: number}} query */
  async history(query) {
    if (!this.conv) return [];
    const { data } = await this.session.rest.GET("/api/v1/conversations/{conversation_id}/messages", {
      params: { path: { conversation_id: this.conv.id }, query: { limit: 50, ...query } },
    });
    return /** @type {any[]} */ (data?.results ?? []);
  }

  async loadOlder() {
    const first = Math.min(...this.messages.keys());
    const page = await this.history({ before_seq: first });
    this.insert(page);
    byId("load-older").hidden = page.length === 0 || page[0].seq <= 1;
  }

  lastSeq() {
    return this.messages.size ? Math.max(...this.messages.keys()) : 0;
  }

  showPresence() {
    if (!this.conv) return;
    const line = byId("chat-presence");
    if (this.conv.kind !== "direct") {
      line.textContent = `${this.conv.members.length} members`;
      return;
    }
    line.textContent = this.list.presenceLabel(this.list.peerOf(this.conv).user_id);
  }

  /** @param {number} seq */
  async readUpTo(seq) {
    if (!this.conv || seq <= 0 || seq <= this.conv.read_seq) {
      if (this.conv) this.list.markedRead(this.conv.id, this.conv.read_seq);
      return;
    }
    const id = this.conv.id;
    try {
      await this.session.client.markRead(id, seq);
      this.list.markedRead(id, seq);
    } catch {
      /* offline: sent again on the next ready */
    }
  }

  /** @param {any} m */
  onMessage(m) {
    const mine = m.sender_id === this.session.me.id;
    if (!this.conv || m.conversation_id !== this.conv.id) {
      const c = this.list.items.get(m.conversation_id);
      if (!mine && c && m.seq > c.delivered_seq) {
        c.delivered_seq = m.seq;
        void this.session.client.markDelivered(m.conversation_id, m.seq).catch(() => {});
      }
      return;
    }
    this.insert([m]);
    if (!mine) void this.readUpTo(m.seq);
  }

  /** @param {any[]} messages */
  insert(messages) {
    const log = byId("messages");
    for (const m of messages) {
      this.messages.set(m.seq, m);
      const row = this.row(m);
      const existing = log.querySelector(`li[data-seq="${m.seq}"]`) ?? log.querySelector(`li[data-client-id="${m.client_id}"]`);
      if (existing) existing.remove();
      // stored rows in seq order, then the pending ones
      let before = null;
      for (const child of /** @type {HTMLElement[]} */ ([...log.children])) {
        const seq = Number(child.dataset.seq || Infinity);
        if (seq > m.seq) {
          before = child;
          break;
        }
      }
      log.insertBefore(row, before);
    }
    byId("message-log").scrollTop = byId("message-log").scrollHeight;
  }

  /** @param {any} m */
  statusOf(m) {
    if (m.sender_id !== this.session.me.id) return null;
    const cursors = [...this.cursors.values()];
    if (cursors.length && cursors.every((c) => c.read >= m.seq)) return "read";
    if (cursors.length && cursors.every((c) => c.delivered >= m.seq)) return "delivered";
    return "sent";
  }

  /** @param {any} m */
  row(m) {
    const mine = m.sender_id === this.session.me.id;
    const sender = mine ? "You" : nameOf(this.conv?.members.find((x) => x.user_id === m.sender_id) ?? { user_id: m.sender_id });
    const status = this.statusOf(m);
    return el(
      "li",
      { class: `message${mine ? " mine" : ""}`, dataset: { seq: String(m.seq), clientId: m.client_id, status: status ?? "" } },
      el("span", { class: "sender" }, sender),
      el("p", { class: "body" }, m.deleted ? "Message deleted" : m.system?.event === "call" ? callSummary(m.system) : m.body ?? ""),
      ...(m.attachments ?? []).map((/** @type {any} */ a) => this.attachment(a)),
      el(
        "span",
        { class: "meta" },
        el("time", { datetime: m.created_at }, timeOf(m.created_at)),
        m.edited_at ? " · edited" : "",
        status ? el("span", { class: "status" }, ` · ${status}`) : null,
      ),
    );
  }

  /** @param {any} a */
  attachment(a) {
    const box = el("div", { class: "attachment", dataset: { attachmentId: String(a.id) } });
    const label = `${a.name} (${sizeOf(a.size)})`;
    if (!this.links.has(a.id)) {
      this.links.set(
        a.id,
        this.session.rest
          .GET("/api/v1/attachments/{attachment_id}", { params: { path: { attachment_id: a.id } } })
          .then(({ data }) => data),
      );
    }
    void /** @type {Promise<any>} */ (this.links.get(a.id)).then((link) => {
      if (!link) {
        box.replaceChildren(el("span", {}, `${label}: unavailable`));
        return;
      }
      const download = el("a", { href: link.url, download: a.name }, `Download ${label}`);
      if (a.category === "image") {
        box.replaceChildren(el("img", { src: link.url, alt: a.name, class: "preview", width: a.width || null, height: a.height || null }), download);
      } else {
        box.replaceChildren(download);
      }
    });
    box.append(el("span", {}, label));
    return box;
  }

  /** @param {any} s */
  onStatus(s) {
    if (!this.conv || s.conversationId !== this.conv.id) return;
    const log = byId("messages");
    if (s.status === "pending") {
      const body = this.pendingBodies.get(s.clientId) ?? "";
      log.append(
        el(
          "li",
          { class: "message mine pending", dataset: { clientId: s.clientId, status: "sending" } },
          el("span", { class: "sender" }, "You"),
          el("p", { class: "body" }, body),
          el("span", { class: "meta" }, el("span", { class: "status" }, "sending…")),
        ),
      );
      byId("message-log").scrollTop = byId("message-log").scrollHeight;
    } else if (s.status === "failed") {
      const row = /** @type {HTMLElement | null} */ (log.querySelector(`li[data-client-id="${s.clientId}"]`));
      if (row) {
        row.dataset.status = "failed";
        const status = row.querySelector(".status");
        if (status) status.textContent = ` · not sent (${s.error?.code ?? "error"})`;
      }
    }
  }

  /** @param {any} r */
  onReceipt(r) {
    if (!this.conv || r.conversation_id !== this.conv.id || r.user_id === this.session.me.id) return;
    const c = this.cursors.get(r.user_id) ?? { delivered: 0, read: 0 };
    c.delivered = Math.max(c.delivered, r.delivered_seq ?? 0, r.read_seq ?? 0);
    c.read = Math.max(c.read, r.read_seq ?? 0);
    this.cursors.set(r.user_id, c);
    for (const m of this.messages.values()) {
      if (m.sender_id !== this.session.me.id) continue;
      const row = /** @type {HTMLElement | null} */ (byId("messages").querySelector(`li[data-seq="${m.seq}"]`));
      const status = this.statusOf(m);
      if (row && status && row.dataset.status !== status) {
        row.dataset.status = status;
        const span = row.querySelector(".status");
        if (span) span.textContent = ` · ${status}`;
      }
    }
  }

  /** @param {{conversation_id: number, user_id: number, active: boolean}} t */
  onTyping(t) {
    if (!this.conv || t.conversation_id !== this.conv.id || t.user_id === this.session.me.id) return;
    clearTimeout(this.typers.get(t.user_id));
    if (t.active) this.typers.set(t.user_id, setTimeout(() => this.onTyping({ ...t, active: false }), TYPING_SHOW_MS));
    else this.typers.delete(t.user_id);
    const names = [...this.typers.keys()].map((id) => nameOf(this.conv?.members.find((m) => m.user_id === id) ?? { user_id: id }));
    byId("typing").textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
  }

  /** This user is typing (throttled), or stopped. @param {boolean} active */
  typing(active) {
    if (!this.conv || this.session.client.state !== "ready") return;
    const id = this.conv.id;
    if (this.typingIdle) clearTimeout(this.typingIdle);
    if (!active) return this.stopTyping();
    this.typingIdle = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
    if (Date.now() - this.typingSentAt < TYPING_SEND_EVERY_MS) return;
    this.typingSentAt = Date.now();
    void this.session.client.request("typing", { conversation_id: id, active: true }).catch(() => {});
  }

  stopTyping() {
    if (this.typingIdle) clearTimeout(this.typingIdle);
    this.typingIdle = null;
    if (!this.typingSentAt || !this.conv) return;
    this.typingSentAt = 0;
    if (this.session.client.state === "ready") {
      void this.session.client.request("typing", { conversation_id: this.conv.id, active: false }).catch(() => {});
    }
  }

  /** @type {Map<string, string>} */
  pendingBodies = new Map();

  async submit() {
    if (!this.conv) return;
    const input = /** @type {HTMLTextAreaElement} */ (byId("message-input"));
    const fileInput = /** @type {HTMLInputElement} */ (byId("attachment-input"));
    const body = input.value.trim();
    const file = fileInput.files?.[0];
    if (!body && !file) return;
    byId("chat-error").textContent = "";
    this.stopTyping();
    /** @type {number[]} */
    let attachmentIds = [];
    if (file) {
      try {
        attachmentIds = [await this.upload(file)];
      } catch (e) {
        byId("chat-error").textContent = `Upload failed: ${e instanceof Error ? e.message : e}`;
        return;
      }
      fileInput.value = "";
    }
    input.value = "";
    const conversationId = this.conv.id;
    // the pending row shows the text at once (the `pending` status event carries no body)
    const send = this.session.client.send(conversationId, body, { attachmentIds });
    const { clientId, acked } = await send;
    this.pendingBodies.set(clientId, body);
    const row = byId("messages").querySelector(`li[data-client-id="${clientId}"] .body`);
    if (row && !row.textContent) row.textContent = body;
    acked.catch((e) => {
      byId("chat-error").textContent = `Not sent: ${e.code ?? e.message}`;
    });
  }

  /** Upload a file (the SDK's uploadAttachment: progress, then the wait through `processing`);
   * resolves with the attachment id once it can be sent. @param {File} file */
  async upload(file) {
    const box = byId("upload");
    const bar = /** @type {HTMLProgressElement} */ (byId("upload-progress"));
    byId("upload-label").textContent = `Uploading ${file.name}`;
    bar.value = 0;
    box.hidden = false;
    try {
      const { rest, client, getToken } = this.session;
      const attachment = await uploadAttachment({ baseUrl: location.origin, getToken, rest, client }, file, {
        onProgress: ({ loaded, total }) => {
          bar.value = total ? Math.round((100 * loaded) / total) : 0;
        },
      });
      return attachment.id;
    } finally {
      box.hidden = true;
    }
  }
}
