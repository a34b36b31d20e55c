// End-to-end encryption for the client (docs/clients.md#end-to-end-encryption): the hook the
// client calls on its send and delivery paths, the key registration and top-up, and the device
// lists. The cryptography is the provider's (provider.js); without one (a browser), encrypted
// conversations show placeholders and sending to them raises E2EEError("e2ee_unavailable").
//
//   const e2ee = attachE2EE(client, { rest, provider });   // before client.connect()
//
// The client calls, per outbox attempt, `seal(item)` for the frame's content (`body`, or
// `ciphertexts` for every device of every member but this one); on `devices_mismatch`
// `repair(item, error)` (the device lists are refreshed from the error, sessions of devices that
// are gone are dropped) and sends again; on delivery `open(message)`, exactly once per
// (conversation, seq), so every ciphertext is decrypted once, in order.
import { E2EEError, ServerError } from "../errors.js";
import { decodeCiphertext, decodePlaintext, encodeCiphertext, encodePlaintext } from "./wire.js";

/** @typedef {import("../generated/frames.js").ServerMessage} Message */
/** @typedef {import("../generated/frames.js").ServerFrame} ServerFrame */
/** @typedef {import("../stores.js").OutboxItem} OutboxItem */
/** @typedef {import("./provider.js").CryptoProvider} CryptoProvider */
/** @typedef {import("./provider.js").DeviceAddress} DeviceAddress */
/** @typedef {ReturnType<typeof import("../rest.js").createRestClient>} RestClient */

/**
 * A message as the app gets it (`client.on("message")`). In an end-to-end encrypted conversation
 * `encrypted` is true and `body` is the decrypted text, or null with `undecryptable` saying why:
 * `"open_on_phone"` (no crypto provider here, e.g. a browser), `"decrypt_failed"`, or
 * `"no_ciphertext"` (nothing for this device: sent before it published keys, or this device's
 * own message whose plaintext it no longer holds).
 * @typedef {Omit<Message, "body"> & {body: string | null, encrypted?: boolean,
 *   undecryptable?: "open_on_phone" | "decrypt_failed" | "no_ciphertext"}} AppMessage
 */

/**
 * What the client needs from end-to-end encryption (the client's `e2ee`).
 * @typedef {object} E2EEHook
 * @property {(conversationId: number) => Promise<void>} beforeSend  throws E2EEError to refuse
 * @property {(item: OutboxItem) => Promise<Record<string, unknown>>} seal  `{body}` or `{ciphertexts}`
 * @property {(item: OutboxItem, error: ServerError) => Promise<boolean>} repair  true: send again
 * @property {(message: Message) => Promise<AppMessage>} open
 */

/** Refresh-and-resend rounds per message after `devices_mismatch` before it fails. */
export const E2EE_MAX_REPAIRS = 3;

/**
 * @typedef {object} E2EEOptions
 * @property {RestClient} [rest]              the REST client (createRestClient): key directory, conversations
 * @property {CryptoProvider | null} [provider] null or absent: no encryption here (placeholders)
 * @property {number} [prekeyBatch]           one-time (and Kyber) prekeys per upload (default 50)
 * @property {number} [prekeyLowThreshold]    top up below this many on connect (default 10, the server's)
 */

/** @implements {E2EEHook} */
export class EndToEnd {
  /**
   * @param {import("../client.js").HealthchatClient} client
   * @param {E2EEOptions} [options]
   */
  constructor(client, options = {}) {
    this.client = client;
    this.rest = options.rest ?? null;
    this.provider = options.provider ?? null;
    this.prekeyBatch = options.prekeyBatch ?? 50;
    this.prekeyLowThreshold = options.prekeyLowThreshold ?? 10;
    /** @type {Map<number, {e2ee: boolean, members: number[]}>} */
    this.conversations = new Map();
    /** @type {Map<number, number[]>} devices with published keys, per user */
    this.devices = new Map();
    /** @type {Map<string, string>} plaintext of this device's encrypted sends, by client_id, until delivered */
    this.sentPlaintext = new Map();
    /** @type {Map<string, number>} */
    this.repairs = new Map();
    /** @type {DeviceAddress | null} */
    this.self = null;
    /** @type {Promise<void> | null} */
    this.registering = null;
    this.stats = { sessionsStarted: 0, encrypted: 0, decrypted: 0, repaired: 0, prekeyUploads: 0 };
  }

  /** Subscribe to the client's frames and readiness (attachE2EE does this). */
  attach() {
    this.client.e2ee = this;
    this.client.on("frame", (frame) => {
      this.onFrame(frame).catch((error) => this.client.emit("error", asE2EEError(error)));
    });
    this.client.on("ready", (ready) => {
      if (this.provider && this.rest) this.ensureKeys(ready.user_id).catch((error) => this.client.emit("error", asE2EEError(error)));
    });
    return this;
  }

  // --- keys ----------------------------------------------------------------------------------
  /** Bind the provider to this device (user id from `ready` or `GET /api/v1/me`). */
  async bind(userId = this.client.session?.user_id) {
    if (!this.provider) throw new E2EEError("e2ee_unavailable", "no crypto provider on this client");
    const deviceId = this.client.deviceId;
    if (deviceId == null) throw new E2EEError("not_registered", "end-to-end encryption needs options.deviceId (POST /api/v1/devices)");
    if (userId == null) {
      const me = await this.api().GET("/api/v1/me");
      if (!me.data) throw new E2EEError("not_registered", "GET /api/v1/me failed", me.error);
      userId = me.data.id;
    }
    if (this.self && this.self.userId === userId && this.self.deviceId === deviceId) return this.self;
    this.self = { userId, deviceId };
    await this.provider.bind(this.self);
    return this.self;
  }

  /**
   * Publish this device's keys once (identity, signed prekey, one-time and Kyber prekeys), then
   * keep the one-time stock above the threshold. Runs on every `ready`; call it yourself to
   * register before the first connect.
   * @param {number} [userId]
   */
  ensureKeys(userId) {
    if (!this.registering) {
      this.registering = (async () => {
        await this.bind(userId);
        const provider = /** @type {CryptoProvider} */ (this.provider);
        if (!(await provider.isRegistered())) {
          await this.upload(await provider.createKeys(this.counts()));
          await provider.markRegistered();
        } else {
          await this.topUp();
        }
      })().finally(() => {
        this.registering = null;
      });
    }
    return this.registering;
  }

  /** Upload fresh one-time prekeys when the server holds fewer than the threshold (also on `keys.low`). */
  async topUp() {
    const self = await this.bind();
    const count = await this.api().GET("/api/v1/keys/count", { params: { query: { device_id: self.deviceId } } });
    if (!count.data) throw new E2EEError("not_registered", "GET /api/v1/keys/count failed", count.error);
    const low = Math.min(count.data.one_time_prekeys, count.data.kyber_prekeys);
    if (low >= this.prekeyLowThreshold) return;
    await this.upload(await /** @type {CryptoProvider} */ (this.provider).createPrekeys(this.counts()));
  }

  counts() {
    return { oneTimePrekeys: this.prekeyBatch, kyberPrekeys: this.prekeyBatch };
  }

  /** @param {import("./provider.js").KeysUpload} body */
  async upload(body) {
    const answer = await this.api().PUT("/api/v1/keys", { body });
    if (!answer.data) throw new E2EEError("not_registered", "PUT /api/v1/keys was refused", answer.error);
    this.stats.prekeyUploads += 1;
    return answer.data;
  }

  api() {
    if (!this.rest) throw new E2EEError("e2ee_unavailable", "end-to-end encryption needs the REST client (attachE2EE(client, {rest}))");
    return this.rest;
  }

  // --- conversations and devices ---------------------------------------------------------------
  /** @param {number} conversationId */
  async conversation(conversationId) {
    let known = this.conversations.get(conversationId);
    if (!known && this.rest) {
      const answer = await this.rest.GET("/api/v1/conversations/{conversation_id}", {
        params: { path: { conversation_id: conversationId } },
      });
      // Not found / not a member: the server refuses the send itself with its own error.
      if (!answer.data) return { e2ee: false, members: [] };
      known = { e2ee: answer.data.e2ee, members: answer.data.members.map((m) => m.user_id) };
      this.conversations.set(conversationId, known);
    }
    return known ?? { e2ee: false, members: [] };
  }

  /**
   * Learn `userId`'s devices and start sessions with those that have none (or with `deviceId`
   * only) from their bundles. Each fetch consumes a one-time prekey per device on the server
   * (within its budgets), so it is done only for a user whose devices are unknown or a device
   * without a session.
   * @param {number} userId @param {number} [deviceId]
   */
  async fetchBundles(userId, deviceId) {
    const self = /** @type {DeviceAddress} */ (this.self);
    const answer = await this.api().GET("/api/v1/keys/{user_id}", {
      params: { path: { user_id: userId }, query: deviceId == null ? {} : { device_id: deviceId } },
    });
    if (!answer.data) throw new E2EEError("bundle_unavailable", `GET /api/v1/keys/${userId} failed`, answer.error);
    const provider = /** @type {CryptoProvider} */ (this.provider);
    for (const bundle of answer.data.devices) {
      if (userId === self.userId && bundle.device_id === self.deviceId) continue;
      // A session started by an incoming PreKey message is kept (its ratchet is already running).
      if (deviceId == null && (await provider.hasSession({ userId, deviceId: bundle.device_id }))) continue;
      await guard("encrypt_failed", () => provider.startSession({ userId, deviceId: bundle.device_id }, bundle));
      this.stats.sessionsStarted += 1;
    }
    return answer.data.devices.map((d) => d.device_id);
  }

  // --- the hook ----------------------------------------------------------------------------------
  /** @param {number} conversationId */
  async beforeSend(conversationId) {
    if (this.provider) return;
    if ((await this.conversation(conversationId)).e2ee) {
      throw new E2EEError(
        "e2ee_unavailable",
        `conversation ${conversationId} is end-to-end encrypted and this client has no crypto provider: send from the phone`,
      );
    }
  }

  /** @param {OutboxItem} item */
  async seal(item) {
    const conversation = await this.conversation(item.conversationId);
    if (!conversation.e2ee) return { body: item.body };
    if (!this.provider) throw new E2EEError("e2ee_unavailable", "this client has no crypto provider");
    const self = await this.bind();
    const provider = this.provider;
    for (const userId of conversation.members) {
      // Our own other devices are learnt from devices_mismatch (fetching our own bundles would
      // spend this device's one-time keys too).
      if (!this.devices.has(userId)) this.devices.set(userId, userId === self.userId ? [] : await this.fetchBundles(userId));
    }
    /** @type {Record<string, string>} */
    const ciphertexts = {};
    const plaintext = encodePlaintext({ text: item.body ?? "" });
    for (const userId of conversation.members) {
      for (const deviceId of this.devices.get(userId) ?? []) {
        if (userId === self.userId && deviceId === self.deviceId) continue;
        const remote = { userId, deviceId };
        if (!(await provider.hasSession(remote))) await this.fetchBundles(userId, deviceId);
        const sealed = await guard("encrypt_failed", () => provider.encrypt(remote, plaintext));
        ciphertexts[String(deviceId)] = encodeCiphertext({ senderDeviceId: self.deviceId, ...sealed });
        this.stats.encrypted += 1;
      }
    }
    if (!Object.keys(ciphertexts).length) {
      const otherDevices = conversation.members.some((u) => u !== self.userId);
      // Only our own user is known to have no other device: ask the server (devices_mismatch).
      if (!otherDevices) throw new E2EEError("no_recipient_devices", "no member of this conversation has published keys");
      throw new E2EEError("no_recipient_devices", "no other member's device has published keys yet");
    }
    this.sentPlaintext.set(item.clientId, item.body ?? "");
    return { ciphertexts };
  }

  /** @param {OutboxItem} item @param {ServerError} error */
  async repair(item, error) {
    if (error.code !== "devices_mismatch" || !this.provider) return false;
    const attempts = (this.repairs.get(item.clientId) ?? 0) + 1;
    this.repairs.set(item.clientId, attempts);
    if (attempts > E2EE_MAX_REPAIRS) {
      this.repairs.delete(item.clientId);
      return false;
    }
    const body = /** @type {{devices?: {user_id: number, device_ids: number[]}[], extra_devices?: number[]}} */ (error.body);
    const extra = new Set(body.extra_devices ?? []);
    for (const [userId, ids] of this.devices) {
      for (const deviceId of ids) if (extra.has(deviceId)) await this.provider.dropSession({ userId, deviceId });
    }
    for (const entry of body.devices ?? []) this.devices.set(entry.user_id, [...entry.device_ids]);
    // The member list may have changed too.
    this.conversations.delete(item.conversationId);
    this.stats.repaired += 1;
    return true;
  }

  /** @param {Message} message @returns {Promise<AppMessage>} */
  async open(message) {
    if (message.kind !== "text" || !("ciphertext" in message)) return message;
    this.noteEncrypted(message.conversation_id);
    if (message.deleted) return { ...message, encrypted: true };
    const mine = this.client.session && message.sender_id === this.client.session.user_id;
    if (message.ciphertext == null) {
      const text = mine ? await this.ownPlaintext(message.client_id) : undefined;
      if (text === undefined) return placeholder(message, this.provider ? "no_ciphertext" : "open_on_phone");
      return { ...message, body: text, encrypted: true };
    }
    if (!this.provider) return placeholder(message, "open_on_phone");
    try {
      await this.bind();
      const { senderDeviceId, type, body } = decodeCiphertext(message.ciphertext);
      const plain = await this.provider.decrypt({ userId: message.sender_id, deviceId: senderDeviceId }, type, body);
      this.stats.decrypted += 1;
      return { ...message, body: decodePlaintext(plain).text, encrypted: true };
    } catch (error) {
      const failure = new E2EEError("decrypt_failed", `message ${message.id} of conversation ${message.conversation_id} could not be decrypted`, error);
      this.client.emit("error", failure);
      return placeholder(message, "decrypt_failed");
    }
  }

  /** The plaintext of this device's own send (the ack and a replay carry no ciphertext for the
   * sending device): kept in memory until delivered, or the outbox item after a restart.
   * @param {string} clientId */
  async ownPlaintext(clientId) {
    const kept = this.sentPlaintext.get(clientId);
    if (kept !== undefined) {
      this.sentPlaintext.delete(clientId);
      this.repairs.delete(clientId);
      return kept;
    }
    const item = (await this.client.store.listOutbox()).find((i) => i.clientId === clientId);
    return item?.body ?? undefined;
  }

  /** A conversation seen with ciphertexts is encrypted (how a client without REST learns it).
   * @param {number} conversationId */
  noteEncrypted(conversationId) {
    const known = this.conversations.get(conversationId);
    if (known) known.e2ee = true;
    else if (!this.rest) this.conversations.set(conversationId, { e2ee: true, members: [] });
  }

  // --- key-directory events ------------------------------------------------------------------------
  /** @param {ServerFrame} frame */
  async onFrame(frame) {
    switch (frame.type) {
      case "keys.low":
        if (this.provider && this.rest && frame.data.device_id === this.client.deviceId) await this.topUp();
        break;
      case "identity.changed":
        // Once per (user, device) matters; the frame comes once per shared conversation.
        if (this.provider && frame.data.device_id !== this.client.deviceId) {
          await this.bind();
          await this.provider.forgetIdentity({ userId: frame.data.user_id, deviceId: frame.data.device_id });
          this.client.emit("identityChanged", { userId: frame.data.user_id, deviceId: frame.data.device_id });
        }
        break;
      case "device.added": {
        const ids = this.devices.get(frame.data.user_id);
        if (ids && !ids.includes(frame.data.device_id)) ids.push(frame.data.device_id);
        break;
      }
      case "member.added":
      case "member.removed":
      case "member.left":
        this.conversations.delete(frame.data.conversation_id);
        break;
      default:
        break;
    }
  }
}

/** @param {Message} message @param {NonNullable<AppMessage["undecryptable"]>} why @returns {AppMessage} */
function placeholder(message, why) {
  return { ...message, body: null, encrypted: true, undecryptable: why };
}

/**
 * Run a provider call; its failure (an untrusted identity, a broken bundle...) becomes a typed
 * E2EEError, which fails the message instead of blocking the outbox.
 * @template T @param {string} code @param {() => Promise<T>} call @returns {Promise<T>}
 */
async function guard(code, call) {
  try {
    return await call();
  } catch (error) {
    throw new E2EEError(code, `the crypto provider failed: ${error instanceof Error ? error.message : String(error)}`, error);
  }
}

/** @param {unknown} error */
function asE2EEError(error) {
  if (error instanceof E2EEError || error instanceof ServerError) return error;
  return new E2EEError("e2ee_failed", error instanceof Error ? error.message : String(error), error);
}

/**
 * Turn on end-to-end encryption for `client`: encrypted conversations are sealed and opened
 * with `provider`; without one (a browser), they show placeholders and sending to them throws
 * `E2EEError` `e2ee_unavailable`. Call before `client.connect()`.
 * @param {import("../client.js").HealthchatClient} client
 * @param {E2EEOptions} [options]
 */
export function attachE2EE(client, options = {}) {
  return new EndToEnd(client, options).attach();
}
