// Real Signal-protocol clients (the official @signalapp/libsignal-client, test tooling only)
// talking to a live healthchat server over REST (fetch) and WebSocket (ws).
//
// Driven by tests/e2ee/test_libsignal_canary.py, which creates the users, their devices and an
// end-to-end encrypted conversation, and passes everything in the HC_E2EE_CONFIG environment
// variable (JSON):
//   {base_url, ws_url, conversation_id, markers: [..], clients: [{name, user_id, device_id, token}],
//    scenario?}
// Scenario "canary" (the default): clients[0] and clients[1] are two devices of one user (alice),
// clients[2] is bob. Scenario "no_one_time_prekey" (tests/e2ee/test_libsignal_no_one_time_prekey.py):
// clients[0] a patient, clients[1] a doctor.
//
// Each client has its own identity key, prekeys and in-memory stores; they share nothing but
// the server. libsignal device ids must be 1..127 while ours are database ids, so a session is
// addressed by the name "<user_id>.<device_id>" with libsignal device id 1 (docs/e2ee.md).
// A ciphertext on the wire is base64 of: one byte CiphertextMessageType (3 PreKey, 2 Whisper),
// then the serialised message. The plaintext is JSON: {text, attachment?: {id, key, iv}}.
//
// Prints one JSON line: {ok: true, steps: [...]} or {ok: false, error}.

import { webcrypto } from 'node:crypto';
import * as S from '@signalapp/libsignal-client';
import WebSocket from 'ws';

const config = JSON.parse(process.env.HC_E2EE_CONFIG);
const steps = [];
const log = (step) => steps.push(step);
const b64 = (bytes) => Buffer.from(bytes).toString('base64');
const unb64 = (text) => new Uint8Array(Buffer.from(text, 'base64'));
const utf8 = (text) => new Uint8Array(Buffer.from(text, 'utf8'));
const addressOf = (userId, deviceId) => S.ProtocolAddress.new(`${userId}.${deviceId}`, 1);

// --- In-memory stores ------------------------------------------------------------------------
class Stores {
  constructor() {
    this.identityPair = S.IdentityKeyPair.generate();
    this.registrationId = 1 + Math.floor(Math.random() * 16000);
    this.sessions = new Map();
    this.identities = new Map();
    this.preKeys = new Map();
    this.signedPreKeys = new Map();
    this.kyberPreKeys = new Map();
    const self = this;
    this.session = new (class extends S.SessionStore {
      async saveSession(address, record) { self.sessions.set(address.toString(), record.serialize()); }
      async getSession(address) {
        const raw = self.sessions.get(address.toString());
        return raw ? S.SessionRecord.deserialize(raw) : null;
      }
      async getExistingSessions(addresses) {
        return addresses.map((a) => S.SessionRecord.deserialize(self.sessions.get(a.toString())));
      }
    })();
    this.identity = new (class extends S.IdentityKeyStore {
      async getIdentityKey() { return self.identityPair.privateKey; }
      async getLocalRegistrationId() { return self.registrationId; }
      async saveIdentity(address, key) {
        const previous = self.identities.get(address.toString());
        self.identities.set(address.toString(), key.serialize());
        return previous && Buffer.compare(Buffer.from(previous), Buffer.from(key.serialize())) !== 0
          ? S.IdentityChange.ReplacedExisting
          : S.IdentityChange.NewOrUnchanged;
      }
      async isTrustedIdentity(address, key) {
        const known = self.identities.get(address.toString());
        return !known || Buffer.compare(Buffer.from(known), Buffer.from(key.serialize())) === 0;
      }
      async getIdentity(address) {
        const raw = self.identities.get(address.toString());
        return raw ? S.PublicKey.deserialize(raw) : null;
      }
    })();
    this.preKey = new (class extends S.PreKeyStore {
      async savePreKey(id, record) { self.preKeys.set(id, record.serialize()); }
      async getPreKey(id) { return S.PreKeyRecord.deserialize(self.preKeys.get(id)); }
      async removePreKey(id) { self.preKeys.delete(id); }
    })();
    this.signedPreKey = new (class extends S.SignedPreKeyStore {
      async saveSignedPreKey(id, record) { self.signedPreKeys.set(id, record.serialize()); }
      async getSignedPreKey(id) { return S.SignedPreKeyRecord.deserialize(self.signedPreKeys.get(id)); }
    })();
    this.kyberPreKey = new (class extends S.KyberPreKeyStore {
      async saveKyberPreKey(id, record) { self.kyberPreKeys.set(id, record.serialize()); }
      async getKyberPreKey(id) { return S.KyberPreKeyRecord.deserialize(self.kyberPreKeys.get(id)); }
      async markKyberPreKeyUsed() {}
    })();
  }
}

// --- One client: keys, REST, socket, encrypt/decrypt ---------------------------------------------
class Client {
  constructor({ name, user_id, device_id, token }) {
    Object.assign(this, { name, userId: user_id, deviceId: device_id, token });
    this.stores = new Stores();
    this.address = addressOf(user_id, device_id);
    this.inbox = [];
    this.waiters = [];
  }

  async api(method, path, body) {
    const response = await fetch(`${config.base_url}/api/v1/${path}`, {
      method,
      headers: {
        Authorization: `Bearer ${this.token}`,
        'X-Device-Id': String(this.deviceId),
        ...(body instanceof FormData ? {} : { 'Content-Type': 'application/json' }),
      },
      body: body === undefined ? undefined : body instanceof FormData ? body : JSON.stringify(body),
    });
    const text = await response.text();
    let data = null;
    try { data = JSON.parse(text); } catch { data = text; }
    return { status: response.status, data };
  }

  // Generate and upload: identity, signed prekey, 5 one-time prekeys, 5 one-time Kyber prekeys
  // and a last-resort Kyber prekey, each signed by the identity key where Signal signs.
  async publishKeys() {
    const s = this.stores;
    const now = Date.now();
    const identityPrivate = s.identityPair.privateKey;
    const signed = S.PrivateKey.generate();
    const signedPublic = signed.getPublicKey();
    const signature = identityPrivate.sign(signedPublic.serialize());
    await s.signedPreKey.saveSignedPreKey(1, S.SignedPreKeyRecord.new(1, now, signedPublic, signed, signature));
    const oneTime = [];
    for (let id = 1; id <= 5; id += 1) {
      const key = S.PrivateKey.generate();
      await s.preKey.savePreKey(id, S.PreKeyRecord.new(id, key.getPublicKey(), key));
      oneTime.push({ id, public_key: b64(key.getPublicKey().serialize()) });
    }
    const kyber = [];
    for (let id = 1; id <= 6; id += 1) {
      const pair = S.KEMKeyPair.generate();
      const sig = identityPrivate.sign(pair.getPublicKey().serialize());
      await s.kyberPreKey.saveKyberPreKey(id, S.KyberPreKeyRecord.new(id, now, pair, sig));
      kyber.push({ id, public_key: b64(pair.getPublicKey().serialize()), signature: b64(sig) });
    }
    const body = {
      device_id: this.deviceId,
      registration_id: s.registrationId,
      identity_key: b64(s.identityPair.publicKey.serialize()),
      signed_prekey: { id: 1, public_key: b64(signedPublic.serialize()), signature: b64(signature) },
      one_time_prekeys: oneTime,
      kyber_prekeys: kyber.slice(0, 5),
      last_resort_kyber_prekey: kyber[5],
    };
    const response = await this.api('PUT', 'keys', body);
    if (response.status !== 200) throw new Error(`${this.name}: PUT keys ${response.status} ${JSON.stringify(response.data)}`);
    // A forged signature is refused (checked server-side with XEdDSA).
    const forged = { ...body, signed_prekey: { ...body.signed_prekey, signature: b64(S.PrivateKey.generate().sign(signedPublic.serialize())) } };
    const refused = await this.api('PUT', 'keys', forged);
    if (refused.status !== 422 || refused.data.error.code !== 'invalid_signature') {
      throw new Error(`${this.name}: forged signature not refused: ${refused.status}`);
    }
    log({ client: this.name, step: 'keys published', counts: response.data });
  }

  async connect() {
    this.ws = new WebSocket(config.ws_url, {
      headers: { Authorization: `Bearer ${this.token}`, 'X-Device-Id': String(this.deviceId) },
    });
    this.ws.on('message', (raw) => {
      const frame = JSON.parse(raw.toString());
      const i = this.waiters.findIndex((w) => w.match(frame));
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(frame);
      else this.inbox.push(frame);
    });
    await new Promise((resolve, reject) => { this.ws.once('open', resolve); this.ws.once('error', reject); });
    const ready = await this.next((f) => f.type === 'ready');
    if (ready.data.device_id !== this.deviceId) throw new Error('wrong device on the socket');
  }

  next(match, timeoutMs = 10000) {
    const i = this.inbox.findIndex(match);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0]);
    return new Promise((resolve, reject) => {
      const waiter = { match, resolve };
      this.waiters.push(waiter);
      setTimeout(() => {
        const k = this.waiters.indexOf(waiter);
        if (k >= 0) { this.waiters.splice(k, 1); reject(new Error(`${this.name}: timeout; inbox ${JSON.stringify(this.inbox.slice(-3))}`)); }
      }, timeoutMs);
    });
  }

  async request(type, data) {
    const ref = `${this.name}-${Math.random().toString(36).slice(2)}`;
    this.ws.send(JSON.stringify({ type, ref, data }));
    return this.next((f) => f.ref === ref && (f.type === 'ack' || f.type === 'error'));
  }

  // Fetch a user's bundles (optionally one device's) and start sessions with them.
  async startSessions(userId, onlyDevice) {
    const query = onlyDevice ? `?device_id=${onlyDevice}` : '';
    const response = await this.api('GET', `keys/${userId}${query}`);
    if (response.status !== 200) throw new Error(`${this.name}: GET keys ${response.status}`);
    for (const d of response.data.devices) {
      if (userId === this.userId && d.device_id === this.deviceId) continue;
      const bundle = S.PreKeyBundle.new(
        d.registration_id,
        1,
        d.one_time_prekey ? d.one_time_prekey.id : null,
        d.one_time_prekey ? S.PublicKey.deserialize(unb64(d.one_time_prekey.public_key)) : null,
        d.signed_prekey.id,
        S.PublicKey.deserialize(unb64(d.signed_prekey.public_key)),
        unb64(d.signed_prekey.signature),
        S.PublicKey.deserialize(unb64(d.identity_key)),
        d.kyber_prekey.id,
        S.KEMPublicKey.deserialize(unb64(d.kyber_prekey.public_key)),
        unb64(d.kyber_prekey.signature),
      );
      await S.processPreKeyBundle(bundle, addressOf(userId, d.device_id), this.address, this.stores.session, this.stores.identity);
    }
    return response.data.devices.map((d) => d.device_id);
  }

  async encryptFor(targets, plaintext) {
    const out = {};
    for (const { userId, deviceId } of targets) {
      const message = await S.signalEncrypt(
        utf8(JSON.stringify(plaintext)), addressOf(userId, deviceId), this.address, this.stores.session, this.stores.identity,
      );
      out[String(deviceId)] = b64(Buffer.concat([Buffer.from([message.type()]), Buffer.from(message.serialize())]));
    }
    return out;
  }

  async decrypt(senderId, senderDevice, ciphertext) {
    const raw = unb64(ciphertext);
    const type = raw[0];
    const body = raw.slice(1);
    const from = addressOf(senderId, senderDevice);
    const s = this.stores;
    let plain;
    if (type === S.CiphertextMessageType.PreKey) {
      plain = await S.signalDecryptPreKey(
        S.PreKeySignalMessage.deserialize(body), from, this.address, s.session, s.identity, s.preKey, s.signedPreKey, s.kyberPreKey,
      );
    } else if (type === S.CiphertextMessageType.Whisper) {
      plain = await S.signalDecrypt(S.SignalMessage.deserialize(body), from, this.address, s.session, s.identity);
    } else {
      throw new Error(`unknown ciphertext type ${type}`);
    }
    return { type, payload: JSON.parse(Buffer.from(plain).toString('utf8')) };
  }
}

// --- Encrypted attachment (AES-256-GCM; the key travels inside the Signal message) -----------
async function uploadEncrypted(client, bytes) {
  const key = webcrypto.getRandomValues(new Uint8Array(32));
  const iv = webcrypto.getRandomValues(new Uint8Array(12));
  const cryptoKey = await webcrypto.subtle.importKey('raw', key, 'AES-GCM', false, ['encrypt']);
  const sealed = new Uint8Array(await webcrypto.subtle.encrypt({ name: 'AES-GCM', iv }, cryptoKey, bytes));
  const form = new FormData();
  form.append('file', new Blob([sealed]), 'scan.pdf');
  form.append('encrypted', 'true');
  const response = await client.api('POST', 'attachments', form);
  if (response.status !== 201) throw new Error(`upload ${response.status} ${JSON.stringify(response.data)}`);
  if (response.data.category !== 'encrypted') throw new Error('upload not stored as encrypted');
  return { id: response.data.id, key: b64(key), iv: b64(iv) };
}

async function downloadDecrypted(client, attachment) {
  const link = await client.api('GET', `attachments/${attachment.id}`);
  if (link.status !== 200) throw new Error(`attachment link ${link.status}`);
  const sealed = new Uint8Array(await (await fetch(link.data.url)).arrayBuffer());
  const cryptoKey = await webcrypto.subtle.importKey('raw', unb64(attachment.key), 'AES-GCM', false, ['decrypt']);
  return Buffer.from(await webcrypto.subtle.decrypt({ name: 'AES-GCM', iv: unb64(attachment.iv) }, cryptoKey, sealed)).toString('utf8');
}

// --- The scenario ------------------------------------------------------------------------------
async function main() {
  const [alice1, alice2, bob] = config.clients.map((c) => new Client(c));
  const [marker1, marker2, marker3, fileMarker] = config.markers;
  const conversation = config.conversation_id;
  for (const c of [alice1, alice2, bob]) await c.publishKeys();
  for (const c of [alice1, alice2, bob]) await c.connect();

  // 1. alice1 knows only bob's devices: the server refuses and lists the current devices.
  const bobDevices = await alice1.startSessions(bob.userId);
  let reply = await alice1.request('message.send', {
    conversation_id: conversation,
    client_id: webcrypto.randomUUID(),
    ciphertexts: await alice1.encryptFor(bobDevices.map((d) => ({ userId: bob.userId, deviceId: d })), { text: 'never sent' }),
  });
  if (reply.type !== 'error' || reply.error.code !== 'devices_mismatch') throw new Error(`expected devices_mismatch: ${JSON.stringify(reply)}`);
  if (JSON.stringify(reply.error.missing_devices) !== JSON.stringify([alice2.deviceId])) throw new Error('wrong missing device list');
  log({ step: 'devices_mismatch', missing: reply.error.missing_devices });

  // 2. Fix it: sessions with the missing device too, then send (bob's session is reset: the
  //    refused message was never delivered, so start it again from a fresh bundle).
  alice1.stores.sessions.clear();
  await alice1.startSessions(bob.userId);
  await alice1.startSessions(alice1.userId, alice2.deviceId);
  const attachment = await uploadEncrypted(alice1, utf8(fileMarker));
  const targets = [{ userId: bob.userId, deviceId: bob.deviceId }, { userId: alice1.userId, deviceId: alice2.deviceId }];
  reply = await alice1.request('message.send', {
    conversation_id: conversation,
    client_id: webcrypto.randomUUID(),
    ciphertexts: await alice1.encryptFor(targets, { text: marker1, attachment }),
    attachment_ids: [attachment.id],
  });
  if (reply.type !== 'ack') throw new Error(`send refused: ${JSON.stringify(reply)}`);
  if (reply.data.message.body !== '' || reply.data.message.ciphertext !== null) throw new Error('ack leaked content');
  const sent = reply.data.message;

  // 3. bob and alice's other device each get only their own ciphertext, and decrypt it.
  for (const c of [bob, alice2]) {
    const frame = await c.next((f) => f.type === 'message.new' && f.data.message.id === sent.id);
    const { type, payload } = await c.decrypt(alice1.userId, alice1.deviceId, frame.data.message.ciphertext);
    if (type !== S.CiphertextMessageType.PreKey || payload.text !== marker1) throw new Error(`${c.name} decrypted wrongly`);
    c.lastAttachment = payload.attachment;
    log({ client: c.name, step: 'decrypted PreKey message', seq: frame.data.message.seq });
  }
  if ((await downloadDecrypted(bob, bob.lastAttachment)) !== fileMarker) throw new Error('attachment did not decrypt');
  log({ client: bob.name, step: 'decrypted attachment' });

  // 4. History over REST gives bob's device the same ciphertext it got live.
  const history = await bob.api('GET', `conversations/${conversation}/messages`);
  if (!history.data.results.some((m) => m.id === sent.id && m.ciphertext)) throw new Error('no ciphertext in history');

  // 5. bob answers both of alice's devices (a new session with alice2 from its bundle).
  await bob.startSessions(alice1.userId, alice2.deviceId);
  reply = await bob.request('message.send', {
    conversation_id: conversation,
    client_id: webcrypto.randomUUID(),
    ciphertexts: await bob.encryptFor(
      [{ userId: alice1.userId, deviceId: alice1.deviceId }, { userId: alice1.userId, deviceId: alice2.deviceId }],
      { text: marker2 },
    ),
  });
  if (reply.type !== 'ack') throw new Error(`bob's send refused: ${JSON.stringify(reply)}`);
  for (const c of [alice1, alice2]) {
    const frame = await c.next((f) => f.type === 'message.new' && f.data.message.id === reply.data.message.id);
    const { type, payload } = await c.decrypt(bob.userId, bob.deviceId, frame.data.message.ciphertext);
    if (payload.text !== marker2) throw new Error(`${c.name} could not read bob`);
    log({ client: c.name, step: 'decrypted reply', type });
  }

  // 6. alice1 again: now an ordinary (Whisper) message on the established ratchet.
  reply = await alice1.request('message.send', {
    conversation_id: conversation,
    client_id: webcrypto.randomUUID(),
    ciphertexts: await alice1.encryptFor(targets, { text: marker3 }),
  });
  if (reply.type !== 'ack') throw new Error(`third send refused: ${JSON.stringify(reply)}`);
  const frame = await bob.next((f) => f.type === 'message.new' && f.data.message.id === reply.data.message.id);
  const third = await bob.decrypt(alice1.userId, alice1.deviceId, frame.data.message.ciphertext);
  if (third.type !== S.CiphertextMessageType.Whisper || third.payload.text !== marker3) throw new Error('ratchet message failed');
  log({ client: bob.name, step: 'decrypted ratchet message' });

  // 7. Plaintext is refused in the encrypted conversation.
  reply = await bob.request('message.send', { conversation_id: conversation, client_id: webcrypto.randomUUID(), body: 'plain' });
  if (reply.type !== 'error' || reply.error.code !== 'e2ee_required') throw new Error('plaintext accepted');
  log({ step: 'plaintext refused' });

  for (const c of [alice1, alice2, bob]) c.ws.close();
}

// --- Scenario "no_one_time_prekey": a session from a bundle without a one-time prekey -----------
// The server runs with a prekey budget of 1 per (requester, target): the patient's first fetch of
// the doctor's bundle takes a one-time prekey, the second comes without one (and with the
// last-resort Kyber key). libsignal builds a PQXDH session from it; both sides talk.
async function noOneTimePrekey() {
  const [patient, doctor] = config.clients.map((c) => new Client(c));
  const conversation = config.conversation_id;
  for (const c of [patient, doctor]) await c.publishKeys();
  for (const c of [patient, doctor]) await c.connect();
  const first = await patient.api('GET', `keys/${doctor.userId}`);
  if (first.status !== 200 || first.data.devices[0].one_time_prekey === null) throw new Error(`first fetch: ${JSON.stringify(first)}`);
  const second = await patient.api('GET', `keys/${doctor.userId}`);
  const bundle = second.data.devices[0];
  if (second.status !== 200 || bundle.one_time_prekey !== null || !bundle.kyber_prekey.last_resort) {
    throw new Error(`expected a bundle without a one-time prekey: ${JSON.stringify(second)}`);
  }
  log({ step: 'bundle without one-time prekey', kyber_prekey: bundle.kyber_prekey.id });
  await patient.startSessions(doctor.userId); // a third fetch: still over budget, no one-time key
  let reply = await patient.request('message.send', {
    conversation_id: conversation,
    client_id: webcrypto.randomUUID(),
    ciphertexts: await patient.encryptFor([{ userId: doctor.userId, deviceId: doctor.deviceId }], { text: config.markers[0] }),
  });
  if (reply.type !== 'ack') throw new Error(`send refused: ${JSON.stringify(reply)}`);
  let frame = await doctor.next((f) => f.type === 'message.new' && f.data.message.id === reply.data.message.id);
  const opened = await doctor.decrypt(patient.userId, patient.deviceId, frame.data.message.ciphertext);
  if (opened.type !== S.CiphertextMessageType.PreKey || opened.payload.text !== config.markers[0]) throw new Error('doctor could not decrypt');
  log({ client: doctor.name, step: 'decrypted PreKey message without one-time prekey' });
  reply = await doctor.request('message.send', {
    conversation_id: conversation,
    client_id: webcrypto.randomUUID(),
    ciphertexts: await doctor.encryptFor([{ userId: patient.userId, deviceId: patient.deviceId }], { text: config.markers[1] }),
  });
  if (reply.type !== 'ack') throw new Error(`reply refused: ${JSON.stringify(reply)}`);
  frame = await patient.next((f) => f.type === 'message.new' && f.data.message.id === reply.data.message.id);
  const answer = await patient.decrypt(doctor.userId, doctor.deviceId, frame.data.message.ciphertext);
  if (answer.type !== S.CiphertextMessageType.Whisper || answer.payload.text !== config.markers[1]) throw new Error('patient could not decrypt the reply');
  log({ client: patient.name, step: 'decrypted reply' });
  const counts = await doctor.api('GET', `keys/count?device_id=${doctor.deviceId}`);
  log({ step: 'doctor stock', counts: counts.data });
  for (const c of [patient, doctor]) c.ws.close();
}

const scenarios = { canary: main, no_one_time_prekey: noOneTimePrekey };

scenarios[config.scenario || 'canary']().then(
  () => { console.log(JSON.stringify({ ok: true, steps })); process.exit(0); },
  (error) => { console.log(JSON.stringify({ ok: false, error: String(error && error.stack || error), steps })); process.exit(1); },
);
