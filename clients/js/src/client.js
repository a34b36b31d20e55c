// The real-time client: one WebSocket (implementation injected), authentication by `auth` frame,
// `auth.refresh` before the token's exp, app-level pings, reconnect (server hint + jittered
// exponential backoff), sync with a stored cursor, exactly-once in-order delivery per conversation
// and an outbox retried until acknowledged. See docs/clients.md and docs/protocol.md.
import { SERVER_FRAME_TYPES } from "./generated/constants.js";
import {
  AuthenticationError,
  CloseError,
  ConnectionLostError,
  ForbiddenError,
  HealthchatError,
  ProtocolError,
  RequestTimeoutError,
  ServerBusyError,
  ServerError,
  closeError,
  E2EEError,
} from "./errors.js";
import { MemoryStore } from "./stores.js";
import { EndToEnd } from "./e2ee/manager.js";

/** @typedef {import("./generated/frames.js").ServerFrame} ServerFrame */
/** @typedef {import("./generated/frames.js").ServerMessage} Message */
/** @typedef {import("./generated/frames.js").ServerReadyData} ReadyData */
/** @typedef {import("./generated/frames.js").ServerReceiptData} ReceiptData */
/** @typedef {import("./generated/frames.js").ServerError} ServerErrorBody */
/** @typedef {import("./generated/frames.js").ClientFrame["type"]} ClientFrameType */
/** @typedef {import("./stores.js").Store} Store */
/** @typedef {import("./stores.js").OutboxItem} OutboxItem */
/** @typedef {import("./rest.js").TokenProvider} TokenProvider */
/** @typedef {import("./e2ee/manager.js").AppMessage} AppMessage */
/** @typedef {import("./e2ee/manager.js").E2EEHook} E2EEHook */

/**
 * The WebSocket shape the client needs: the browser's global `WebSocket` and the `ws` package
 * both fit.
 * @typedef {object} WebSocketLike
 * @property {number} readyState
 * @property {(data: string) => void} send
 * @property {(code?: number, reason?: string) => void} close
 * @property {((ev: any) => void) | null} onopen
 * @property {((ev: any) => void) | null} onmessage
 * @property {((ev: any) => void) | null} onclose
 * @property {((ev: any) => void) | null} onerror
 */
/** @typedef {new (url: string) => WebSocketLike} WebSocketConstructor */

/**
 * @typedef {"pending" | "acked" | "delivered" | "read" | "failed"} SendStatus
 * @typedef {{clientId: string, conversationId: number, status: SendStatus, message?: Message, error?: HealthchatError}} StatusEvent
 * @typedef {"idle" | "connecting" | "authenticating" | "syncing" | "ready" | "closed"} ConnectionState
 */

/**
 * @typedef {object} Events
 * @property {AppMessage} message       a message for the app's timeline: exactly once per
 *   (conversation, seq), in seq order per conversation (the app's own sends included, on ack);
 *   end-to-end encrypted ones decrypted (or placeholders, see e2ee/manager.js)
 * @property {Message} messageUpdated   an edit or deletion (replace the message with this id)
 * @property {ReceiptData} receipt      a member's delivered/read cursor moved
 * @property {StatusEvent} status       pending → acked → delivered → read (or failed)
 * @property {ReadyData} ready          the socket is authenticated (after every (re)connect)
 * @property {{cursor: string}} synced  a sync finished (`more` false); the cursor is stored
 * @property {ConnectionState} state
 * @property {HealthchatError} error    typed errors: CloseError subclasses, ProtocolError, ...
 * @property {ServerFrame} frame        every well-formed frame, as received (typing, presence, calls...)
 * @property {{userId: number, deviceId: number}} identityChanged  a contact's device has a new identity key (show the safety-number change)
 * @property {GroupEventFrame} groupEvent a member.* / group.updated log entry, once per (conversation, event)
 * @property {AnnotationFrame} annotation a reaction.added / reaction.removed / message.pinned /
 *   message.unpinned log entry, once per (conversation, event)
 */
/** @typedef {Extract<ServerFrame, {type: GroupEventType}>} GroupEventFrame */
/** @typedef {Extract<ServerFrame, {type: "reaction.added" | "reaction.removed" | "message.pinned" | "message.unpinned"}>} AnnotationFrame */
/** @typedef {"member.added" | "member.removed" | "member.left" | "member.role_changed" | "group.updated"} GroupEventType */

const OPEN = 1;
const DEFAULT_HINT = { min_ms: 500, max_ms: 5000 };
/** Errors after which resending the same `client_id` cannot succeed: the item fails. */
const RETRYABLE_SEND_ERRORS = new Set(["rate_limited", "server_busy", "internal_error", "auth_unavailable"]);

/**
 * @typedef {object} ClientOptions
 * @property {string} url                       the WebSocket endpoint, e.g. `wss://api.example.com/ws/v1/`
 * @property {TokenProvider} getToken           e.g. Firebase `user.getIdToken(forceRefresh)`
 * @property {WebSocketConstructor} [WebSocket] default: `globalThis.WebSocket`
 * @property {Store} [store]                    default: a new MemoryStore
 * @property {number | null} [deviceId]         from `POST /api/v1/devices`
 * @property {number} [pingIntervalMs]          app-level ping period (default 60 s; the server closes idle sockets after 300 s)
 * @property {number} [requestTimeoutMs]        a request without reply drops the socket (default 15 s)
 * @property {number} [refreshMarginMs]         `auth.refresh` this long before exp (default 60 s, at most half the token's life)
 * @property {() => number} [random]            for the reconnect jitter (default Math.random)
 */

export class HealthchatClient {
  /** @param {ClientOptions} options */
  constructor(options) {
    const WS = options.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    if (!WS) throw new HealthchatError("no WebSocket implementation: pass options.WebSocket");
    /** @type {WebSocketConstructor} */
    this.WebSocket = WS;
    this.url = options.url;
    this.getToken = options.getToken;
    /** @type {Store} */
    this.store = options.store ?? new MemoryStore();
    this.deviceId = options.deviceId ?? null;
    this.pingIntervalMs = options.pingIntervalMs ?? 60_000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 15_000;
    this.refreshMarginMs = options.refreshMarginMs ?? 60_000;
    this.random = options.random ?? Math.random;
    /** @type {ConnectionState} */
    this.state = "idle";
    /** @type {ReadyData | null} */
    this.session = null;
    /** counters the app (and the tests) can read */
    this.stats = { connects: 0, refreshes: 0, syncs: 0, protocolErrors: 0 };
    /** @type {{[K in keyof Events]?: Set<(value: Events[K]) => void>}} */
    this.listeners = {};
    /** @type {WebSocketLike | null} */
    this.ws = null;
    this.refCounter = 0;
    /** @type {Map<string, {resolve: (f: any) => void, reject: (e: Error) => void, timer: ReturnType<typeof setTimeout>}>} */
    this.pending = new Map();
    /** @type {Map<number, Map<number, Message>>} messages past a gap, waiting for the missing seqs */
    this.held = new Map();
    /** @type {Map<number, number | null>} cache of store.getSeq */
    this.seqCache = new Map();
    /** @type {Map<number, Set<number>>} conversation-log entries seen (dedupe by conversation+event) */
    this.seenEvents = new Map();
    /** @type {Map<number, Map<number, {clientId: string, status: SendStatus}>>} own acked messages by seq, until read */
    this.sent = new Map();
    /** @type {Map<string, {acked: Promise<Message>, resolve: (m: Message) => void, reject: (e: Error) => void}>} outbox items not acked yet */
    this.ackWaiters = new Map();
    this.lastCreatedAt = 0;
    this.failedAttempts = 0;
    this.authFailures = 0;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.reconnectTimer = null;
    /** @type {ReturnType<typeof setInterval> | null} */
    this.pingTimer = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this.refreshTimer = null;
    /** @type {ServerErrorBody | null} */
    this.lastError = null;
    this.syncing = false;
    this.syncAgain = false;
    this.flushing = false;
    this.flushAgain = false;
    /** @type {Promise<void>} serialises frame handling so store writes happen in arrival order */
    this.chain = Promise.resolve();
    /** @type {((ready: ReadyData) => void) | null} */
    this.firstReady = null;
    /** @type {((e: Error) => void) | null} */
    this.firstFail = null;
    /** @type {E2EEHook} end-to-end encryption (attachE2EE replaces it; by default: placeholders) */
    this.e2ee = new EndToEnd(this);
  }

  // --- events ------------------------------------------------------------------------------
  /**
   * @template {keyof Events} K
   * @param {K} name @param {(value: Events[K]) => void} listener
   * @returns {() => void} unsubscribe
   */
  on(name, listener) {
    const set = /** @type {Set<(value: Events[K]) => void>} */ (this.listeners[name] ?? new Set());
    /** @type {any} */ (this.listeners)[name] = set;
    set.add(listener);
    return () => set.delete(listener);
  }

  /** @template {keyof Events} K @param {K} name @param {Events[K]} value */
  emit(name, value) {
    for (const listener of this.listeners[name] ?? []) {
      try {
        listener(value);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }

  /** @param {ConnectionState} state */
  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", state);
  }

  // --- lifecycle ---------------------------------------------------------------------------
  /** Connect and authenticate; resolves with the first `ready` (the client then stays
   * connected, reconnecting on its own, until `close()` or a 4403). */
  connect() {
    if (this.state !== "idle" && this.state !== "closed") throw new HealthchatError("already connected");
    return new Promise((resolve, reject) => {
      this.firstReady = resolve;
      this.firstFail = reject;
      this.open();
    });
  }

  /** Close for good (the outbox stays in the store). */
  close() {
    this.setState("closed");
    this.clearTimers();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, "client closed");
    this.failPending(new ConnectionLostError("client closed"));
  }

  /** Drop the current socket as if the network went away (the client reconnects). */
  dropConnection() {
    if (this.ws) this.abandon(this.ws, "dropped by the app");
  }

  /**
   * Give up on a socket now: close it (4000) and reconnect without waiting for its `close`
   * event, which a network that swallows packets (offline, a dead NAT) may never deliver.
   * @param {WebSocketLike} ws @param {string} reason
   */
  abandon(ws, reason) {
    if (this.ws !== ws) return;
    try {
      ws.close(4000, reason);
    } catch {
      // already closing
    }
    ws.onclose?.({ code: 4000, reason });
  }

  open() {
    this.setState("connecting");
    this.lastError = null;
    const ws = new this.WebSocket(this.url);
    this.ws = ws;
    let authenticated = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.setState("authenticating");
      this.authenticate(ws).then(
        () => {
          authenticated = true;
        },
        () => {
          // The server closes with its own code (4401, 4403...) after an error reply: let that
          // close arrive (a request timeout has abandoned the socket already).
          if (this.ws === ws) ws.close(4000, "authentication did not complete");
        },
      );
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      const text = typeof event.data === "string" ? event.data : String(event.data);
      this.serial(() => this.receive(text)).catch((error) => this.emit("error", asError(error)));
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.onClosed(event.code ?? 1006, event.reason ?? "", authenticated);
    };
  }

  /** @param {WebSocketLike} ws */
  async authenticate(ws) {
    const forceRefresh = this.authFailures > 0;
    const token = await this.getToken({ forceRefresh });
    if (this.ws !== ws) return;
    /** @type {ReadyData} */
    const ready = (await this.request("auth", { token, device_id: this.deviceId })).data;
    this.session = ready;
    this.failedAttempts = 0;
    this.authFailures = 0;
    this.stats.connects += 1;
    this.scheduleRefresh(tokenExpiry(token));
    this.startPing();
    this.emit("ready", ready);
    this.setState("syncing");
    if (this.firstReady) {
      this.firstReady(ready);
      this.firstReady = this.firstFail = null;
    }
    await this.sync();
    if (this.ws === ws) this.setState("ready");
    this.flush();
  }

  /** @param {number} code @param {string} reason @param {boolean} authenticated */
  onClosed(code, reason, authenticated) {
    this.clearTimers();
    this.failPending(new ConnectionLostError(`socket closed (${code})`));
    if (this.state === "closed") return;
    const error = closeError(code, reason, this.lastError);
    const fatal = error instanceof ForbiddenError || (error instanceof AuthenticationError && this.authFailures >= 1 && !authenticated);
    if (error instanceof AuthenticationError) this.authFailures += 1;
    error.willReconnect = !fatal;
    this.emit("error", error);
    if (fatal) {
      this.setState("closed");
      if (this.firstFail) this.firstFail(error);
      this.firstReady = this.firstFail = null;
      return;
    }
    const busy = error instanceof ServerBusyError;
    if (!authenticated && !busy) this.failedAttempts += 1;
    const delay = reconnectDelay({
      hint: this.session?.reconnect ?? DEFAULT_HINT,
      authenticated,
      failedAttempts: this.failedAttempts,
      retryAfterMs: busy ? Number(/** @type {any} */ (this.lastError)?.retry_after_ms ?? 0) : null,
      random: this.random,
    });
    this.setState("connecting");
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this.state !== "closed") this.open();
    }, delay);
  }

  clearTimers() {
    if (this.pingTimer) clearInterval(this.pingTimer);
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.pingTimer = this.refreshTimer = null;
  }

  startPing() {
    this.pingTimer = setInterval(() => {
      this.request("ping").catch(() => {});
    }, this.pingIntervalMs);
  }

  /** @param {number | null} expiresAtSeconds */
  scheduleRefresh(expiresAtSeconds) {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (expiresAtSeconds == null) return;
    const left = expiresAtSeconds * 1000 - Date.now();
    const margin = Math.min(this.refreshMarginMs, left / 2);
    this.refreshTimer = setTimeout(() => this.refresh(), Math.max(0, left - margin));
  }

  /** Send `auth.refresh` with a fresh token now (the client does this on its own before exp). */
  async refresh() {
    try {
      const token = await this.getToken({ forceRefresh: true });
      const ack = await this.request("auth.refresh", { token });
      this.stats.refreshes += 1;
      this.scheduleRefresh(ack.data.expires_at ?? tokenExpiry(token));
    } catch (error) {
      this.emit("error", asError(error));
      // Try again shortly; past exp the server closes with 4401 and the client reconnects.
      if (this.ws) this.refreshTimer = setTimeout(() => this.refresh(), 2000);
    }
  }

  // --- requests ----------------------------------------------------------------------------
  /**
   * Send a frame that has no reply on success (`typing`): no `ref`, nothing awaited; a refusal
   * arrives as an `error` event (ServerError without ref).
   * @param {ClientFrameType} type @param {object} data
   */
  notify(type, data) {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN || this.state === "authenticating" || this.state === "connecting")
      throw new ConnectionLostError("not connected");
    ws.send(JSON.stringify({ type, data }));
  }

  /**
   * Send a frame and wait for its reply (`ack`, `pong`, `ready`, `sync.done`), or reject with
   * ServerError / RequestTimeoutError / ConnectionLostError.
   * @param {ClientFrameType} type @param {object} [data]
   * @returns {Promise<any>}
   */
  request(type, data) {
    const ws = this.ws;
    if (!ws || ws.readyState !== OPEN) return Promise.reject(new ConnectionLostError("not connected"));
    const ref = `r${++this.refCounter}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(ref);
        reject(new RequestTimeoutError(`no reply to ${type} in ${this.requestTimeoutMs} ms`));
        this.abandon(ws, "request timeout");
      }, this.requestTimeoutMs);
      this.pending.set(ref, { resolve, reject, timer });
      ws.send(JSON.stringify(data === undefined ? { type, ref } : { type, ref, data }));
    });
  }

  /**
   * Run `task` after every frame received before it has been handled: frames and acks update
   * the delivery watermark one at a time, so no (conversation, seq) is delivered twice.
   * @template T @param {() => Promise<T>} task @returns {Promise<T>}
   */
  serial(task) {
    const run = this.chain.then(task);
    this.chain = run.then(
      () => {},
      () => {},
    );
    return run;
  }

  /** @param {Error} error */
  failPending(error) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(error);
    }
    this.pending.clear();
  }

  // --- incoming frames ---------------------------------------------------------------------
  /** @param {string} text */
  async receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return this.protocolError("the server sent a frame that is not JSON", text);
    }
    const problem = frameProblem(frame);
    if (problem) return this.protocolError(problem, frame);
    const typed = /** @type {ServerFrame} */ (frame);
    if (typed.type === "error") this.lastError = typed.error;
    const ref = "ref" in typed ? typed.ref : undefined;
    if (ref != null && this.pending.has(ref)) {
      const waiter = /** @type {NonNullable<ReturnType<typeof this.pending.get>>} */ (this.pending.get(ref));
      this.pending.delete(ref);
      clearTimeout(waiter.timer);
      if (typed.type === "error") waiter.reject(new ServerError(typed.error, ref));
      else waiter.resolve(typed);
    }
    switch (typed.type) {
      case "message.new":
        await this.logEntry(typed.data.message.conversation_id, typed.event, () => this.accept(typed.data.message));
        break;
      case "message.updated":
        await this.logEntry(typed.data.message.conversation_id, typed.event, async () =>
          this.emit("messageUpdated", typed.data.message),
        );
        break;
      case "receipt":
        await this.logEntry(typed.data.conversation_id, typed.event, async () => this.onReceipt(typed.data));
        break;
      case "member.added":
      case "member.removed":
      case "member.left":
      case "member.role_changed":
      case "group.updated":
        // A group change is a log entry whose system message has its own seq: it joins the timeline.
        await this.logEntry(typed.data.conversation_id, typed.event, async () => {
          await this.accept(typed.data.message);
          this.emit("groupEvent", typed);
        });
        break;
      case "reaction.added":
      case "reaction.removed":
      case "message.pinned":
      case "message.unpinned":
        // Reactions and pins (issue 24): log entries about a message, deduplicated like the others.
        await this.logEntry(typed.data.conversation_id, typed.event, async () => this.emit("annotation", typed));
        break;
      case "sync.required":
        this.backgroundSync();
        break;
      case "error":
        if (ref == null) this.emit("error", new ServerError(typed.error, undefined));
        break;
      default:
        break;
    }
    this.emit("frame", typed);
  }

  /** @param {string} message @param {unknown} raw */
  protocolError(message, raw) {
    this.stats.protocolErrors += 1;
    this.emit("error", new ProtocolError(message, raw));
    // The frame may have carried a conversation entry: the log on the server still has it.
    if (this.state === "ready" || this.state === "syncing") this.backgroundSync();
  }

  /** Run `apply` once per (conversation, event). @param {number} conversationId @param {number} event @param {() => Promise<void>} apply */
  async logEntry(conversationId, event, apply) {
    let seen = this.seenEvents.get(conversationId);
    if (!seen) this.seenEvents.set(conversationId, (seen = new Set()));
    if (seen.has(event)) return;
    seen.add(event);
    if (seen.size > 2000) for (const old of [...seen].slice(0, 1000)) seen.delete(old);
    await apply();
  }

  /** @param {number} conversationId */
  async highestSeq(conversationId) {
    if (!this.seqCache.has(conversationId)) this.seqCache.set(conversationId, await this.store.getSeq(conversationId));
    return /** @type {number | null} */ (this.seqCache.get(conversationId));
  }

  /**
   * A message for the timeline (live, replayed or our own ack): delivered to the app exactly
   * once, in seq order; past a gap it is held and a sync fills the gap. In a conversation this
   * device has not delivered anything of yet, only seq 1 is known to be the start: a later seq
   * is held until a sync has replayed what comes before it (a live frame can overtake the
   * replay after a reconnect), and the end of that sync starts the conversation at the lowest
   * seq held (`releaseHeld`).
   * @param {Message} message @param {boolean} [start] deliver from here (a conversation's first)
   */
  async accept(message, start = false) {
    const conversationId = message.conversation_id;
    const highest = await this.highestSeq(conversationId);
    if (highest !== null && message.seq <= highest) return; // already delivered
    const inOrder = highest === null ? start || message.seq === 1 : message.seq === highest + 1;
    if (!inOrder) {
      let held = this.held.get(conversationId);
      if (!held) this.held.set(conversationId, (held = new Map()));
      held.set(message.seq, message);
      // A sync under way covers a first message; a gap needs a sync after it.
      if (highest !== null || !this.syncing) this.backgroundSync();
      return;
    }
    let next = /** @type {Message | undefined} */ (message);
    while (next) {
      await this.deliver(next);
      const held = this.held.get(conversationId);
      const following = held?.get(next.seq + 1);
      if (held) {
        for (const seq of held.keys()) if (seq <= next.seq) held.delete(seq);
        held.delete(next.seq + 1);
      }
      next = following;
    }
  }

  /** After a complete sync: conversations still without a delivered message start at the
   * lowest seq held (what the sync replayed is all there is before it). */
  async releaseHeld() {
    for (const [conversationId, held] of this.held) {
      if (!held.size || (await this.highestSeq(conversationId)) !== null) continue;
      const first = Math.min(...held.keys());
      const message = /** @type {Message} */ (held.get(first));
      held.delete(first);
      await this.accept(message, true);
    }
  }

  /** @param {Message} message */
  async deliver(message) {
    this.seqCache.set(message.conversation_id, message.seq);
    await this.store.setSeq(message.conversation_id, message.seq);
    const shown = await this.e2ee.open(message); // decrypted here: once per (conversation, seq)
    if (this.session && message.sender_id === this.session.user_id) {
      // Our own message (this device's ack, or replayed by sync after a lost ack).
      const waiter = this.ackWaiters.get(message.client_id);
      if (waiter) await this.acked(message.client_id, message);
    }
    this.emit("message", shown);
  }

  /** @param {ReceiptData} receipt */
  onReceipt(receipt) {
    this.emit("receipt", receipt);
    if (!this.session || receipt.user_id === this.session.user_id) return;
    const mine = this.sent.get(receipt.conversation_id);
    if (!mine) return;
    for (const [seq, entry] of mine) {
      if (entry.status === "acked" && receipt.delivered_seq != null && seq <= receipt.delivered_seq) {
        entry.status = "delivered";
        this.emit("status", { clientId: entry.clientId, conversationId: receipt.conversation_id, status: "delivered" });
      }
      if (entry.status !== "read" && receipt.read_seq != null && seq <= receipt.read_seq) {
        entry.status = "read";
        this.emit("status", { clientId: entry.clientId, conversationId: receipt.conversation_id, status: "read" });
        mine.delete(seq);
      }
    }
  }

  // --- sync --------------------------------------------------------------------------------
  /** Sync from the stored cursor until `more` is false (called on every ready, on a seq gap,
   * on `sync.required` and after an unreadable frame; concurrent calls coalesce). */
  async sync() {
    if (this.syncing) {
      this.syncAgain = true;
      return;
    }
    this.syncing = true;
    try {
      let cursor = null;
      do {
        this.syncAgain = false;
        let more = true;
        while (more) {
          const stored = await this.store.getCursor();
          const done = await this.request("sync", stored ? { cursor: stored } : {});
          // Replayed entries arrived before sync.done; let their handling finish first.
          await this.chain;
          await this.store.setCursor(done.data.cursor);
          more = done.data.more;
          cursor = done.data.cursor;
        }
        this.stats.syncs += 1;
      } while (this.syncAgain);
      await this.serial(() => this.releaseHeld());
      this.emit("synced", { cursor: /** @type {string} */ (cursor) });
    } finally {
      this.syncing = false;
    }
  }

  /** A sync nobody waits for: a lost socket is not an error here (every ready syncs again). */
  backgroundSync() {
    this.sync().catch((error) => {
      if (!(error instanceof ConnectionLostError) && !(error instanceof RequestTimeoutError)) this.emit("error", asError(error));
    });
  }

  // --- sending -----------------------------------------------------------------------------
  /**
   * Queue a text message: stored in the outbox (status `pending`), sent when connected, resent
   * with the same `client_id` after a reconnect until the server acknowledges it.
   * @param {number} conversationId
   * @param {string} body
   * @param {{replyTo?: number | null, attachmentIds?: number[], mentions?: Array<{user_id: number, offset: number, length: number}>}} [options]
   *   `mentions`: members the text names (`offset`/`length` in Unicode code points of `body`); they are
   *   pushed even when they muted the conversation, and find it in `listMentions`
   * @returns {Promise<{clientId: string, acked: Promise<Message>}>}
   */
  async send(conversationId, body, options = {}) {
    await this.e2ee.beforeSend(conversationId);
    /** @type {OutboxItem} */
    const item = {
      clientId: globalThis.crypto.randomUUID(),
      conversationId,
      body,
      replyTo: options.replyTo ?? null,
      attachmentIds: options.attachmentIds ?? [],
      ...(options.mentions?.length ? { mentions: options.mentions } : {}),
      createdAt: Math.max(Date.now(), this.lastCreatedAt + 1),
    };
    this.lastCreatedAt = item.createdAt;
    const { acked } = this.waiterFor(item.clientId);
    await this.store.putOutbox(item);
    this.emit("status", { clientId: item.clientId, conversationId, status: "pending" });
    this.flush();
    return { clientId: item.clientId, acked };
  }

  /** @param {string} clientId */
  waiterFor(clientId) {
    let waiter = this.ackWaiters.get(clientId);
    if (!waiter) {
      /** @type {(m: Message) => void} */
      let resolve = () => {};
      /** @type {(e: Error) => void} */
      let reject = () => {};
      /** @type {Promise<Message>} */
      const acked = new Promise((res, rej) => {
        resolve = res;
        reject = rej;
      });
      acked.catch(() => {});
      waiter = { acked, resolve, reject };
      this.ackWaiters.set(clientId, waiter);
    }
    return waiter;
  }

  /** The outbox a store kept from an earlier run (a persistent store after a restart or page
   * reload), with a promise per item for its ack. Items are sent on `ready` either way; call this
   * before `connect()` to follow them. */
  async restoreOutbox() {
    const items = await this.store.listOutbox();
    for (const item of items) this.lastCreatedAt = Math.max(this.lastCreatedAt, item.createdAt);
    return items.map((item) => ({ ...item, acked: this.waiterFor(item.clientId).acked }));
  }

  /** Send the outbox in order, one message at a time (so seq order is send order). */
  flush() {
    if (this.flushing) {
      this.flushAgain = true;
      return;
    }
    if (this.state !== "ready") return;
    this.flushing = true;
    (async () => {
      try {
        do {
          this.flushAgain = false;
          for (const item of await this.store.listOutbox()) {
            if (this.state !== "ready") return;
            await this.transmit(item);
          }
        } while (this.flushAgain);
      } catch (error) {
        if (!(error instanceof ConnectionLostError) && !(error instanceof RequestTimeoutError)) this.emit("error", asError(error));
      } finally {
        this.flushing = false;
      }
    })();
  }

  /** @param {OutboxItem} item */
  async transmit(item) {
    this.waiterFor(item.clientId);
    for (;;) {
      try {
        // The content is made per attempt: an encrypted one advances the ratchet each time.
        /** @type {Record<string, unknown>} */
        const data = { conversation_id: item.conversationId, client_id: item.clientId, ...(await this.e2ee.seal(item)) };
        if (item.replyTo != null) data.reply_to = item.replyTo;
        if (item.attachmentIds.length) data.attachment_ids = item.attachmentIds;
        if (item.mentions?.length) data.mentions = item.mentions;
        const ack = await this.request("message.send", data);
        await this.serial(() => this.accept(ack.data.message));
        // accept() settles it; a message below the watermark (already delivered) is settled here.
        if (this.ackWaiters.has(item.clientId)) await this.acked(item.clientId, ack.data.message);
        return;
      } catch (error) {
        if (!(error instanceof ServerError) && !(error instanceof E2EEError)) throw error;
        if (error instanceof ServerError && (await this.e2ee.repair(item, error))) continue;
        if (error instanceof ServerError && RETRYABLE_SEND_ERRORS.has(error.code)) {
          const seconds = Number(/** @type {any} */ (error.body).retry_after ?? 1);
          await sleep(Math.min(60, Math.max(0.2, seconds)) * 1000);
          continue;
        }
        await this.store.deleteOutbox(item.clientId);
        const waiter = this.ackWaiters.get(item.clientId);
        this.ackWaiters.delete(item.clientId);
        waiter?.reject(error);
        this.emit("status", { clientId: item.clientId, conversationId: item.conversationId, status: "failed", error });
        return;
      }
    }
  }

  /** @param {string} clientId @param {Message} message */
  async acked(clientId, message) {
    const waiter = this.ackWaiters.get(clientId);
    if (!waiter) return;
    this.ackWaiters.delete(clientId);
    await this.store.deleteOutbox(clientId);
    let mine = this.sent.get(message.conversation_id);
    if (!mine) this.sent.set(message.conversation_id, (mine = new Map()));
    mine.set(message.seq, { clientId, status: "acked" });
    this.emit("status", { clientId, conversationId: message.conversation_id, status: "acked", message });
    waiter.resolve(message);
  }

  // --- receipts (the per-conversation state: ReceiptTracker in receipts.js) -----------------
  /** @param {number} conversationId @param {number} seq */
  markDelivered(conversationId, seq) {
    return this.request("message.delivered", { conversation_id: conversationId, seq });
  }
  /** @param {number} conversationId @param {number} seq */
  markRead(conversationId, seq) {
    return this.request("message.read", { conversation_id: conversationId, seq });
  }
}

/**
 * How long to wait before the next connection attempt (docs/protocol.md#reconnecting):
 * after `server_busy` (1013) `retryAfterMs + uniform(0, min_ms)`; after losing an authenticated
 * socket `uniform(min_ms, max_ms)`; after the n-th failed attempt in a row
 * `uniform(0, min(max_ms, min_ms * 2^n))`.
 * @param {{hint: {min_ms: number, max_ms: number}, authenticated: boolean, failedAttempts: number,
 *   retryAfterMs: number | null, random: () => number}} state
 */
export function reconnectDelay({ hint, authenticated, failedAttempts, retryAfterMs, random }) {
  if (retryAfterMs !== null) return retryAfterMs + random() * hint.min_ms;
  if (authenticated) return hint.min_ms + random() * (hint.max_ms - hint.min_ms);
  return random() * Math.min(hint.max_ms, hint.min_ms * 2 ** failedAttempts);
}

/** @param {unknown} frame @returns {string | null} why the frame cannot be used, or null */
export function frameProblem(frame) {
  if (!frame || typeof frame !== "object" || Array.isArray(frame)) return "a frame that is not a JSON object";
  const f = /** @type {Record<string, any>} */ (frame);
  if (typeof f.type !== "string" || !(/** @type {readonly string[]} */ (SERVER_FRAME_TYPES)).includes(f.type))
    return `an unknown frame type: ${JSON.stringify(f.type)}`;
  if (f.type === "error") {
    if (!f.error || typeof f.error.code !== "string") return "an error frame without error.code";
    return null;
  }
  if (!f.data || typeof f.data !== "object") return `a ${f.type} frame without data`;
  if (f.type === "message.new" || f.type === "message.updated") {
    const m = f.data.message;
    if (!m || !isInt(m.conversation_id) || !isInt(m.seq) || !isInt(m.id) || !isInt(f.event))
      return `a ${f.type} frame without its message's conversation_id, seq, id or event`;
  }
  if (f.type === "receipt" && (!isInt(f.data.conversation_id) || !isInt(f.event))) return "a receipt without conversation_id or event";
  if (GROUP_EVENT_TYPES.has(f.type)) {
    const m = f.data.message;
    if (!isInt(f.data.conversation_id) || !isInt(f.event) || !m || !isInt(m.seq) || m.conversation_id !== f.data.conversation_id)
      return `a ${f.type} frame without conversation_id, event or its system message's seq`;
  }
  if (f.type === "sync.done" && typeof f.data.cursor !== "string") return "a sync.done without cursor";
  return null;
}

const GROUP_EVENT_TYPES = new Set(["member.added", "member.removed", "member.left", "member.role_changed", "group.updated"]);

/** @param {unknown} v */
function isInt(v) {
  return typeof v === "number" && Number.isInteger(v);
}

/** @param {unknown} error @returns {HealthchatError} */
function asError(error) {
  if (error instanceof HealthchatError) return error;
  const wrapped = new HealthchatError(error instanceof Error ? error.message : String(error));
  wrapped.cause = error;
  return wrapped;
}

/** @param {number} ms */
function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The `exp` claim of a JWT (seconds), or null when the token is not a readable JWT.
 * @param {string} token */
export function tokenExpiry(token) {
  try {
    const payload = token.split(".")[1];
    const json = JSON.parse(new TextDecoder().decode(base64UrlDecode(payload)));
    return typeof json.exp === "number" ? json.exp : null;
  } catch {
    return null;
  }
}

/** @param {string} text */
function base64UrlDecode(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(text.length / 4) * 4, "=");
  const binary = atob(b64);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

export { CloseError };
