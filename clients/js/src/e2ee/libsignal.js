// A CryptoProvider (provider.js) on the official Signal library, `@signalapp/libsignal-client`.
// The app passes the library module in: the SDK does not depend on it (the library is AGPL-3.0;
// the SDK only lists it as a devDependency for its tests — see docs/clients.md). Node only: the
// library is a native module with prebuilt binaries, there is no browser build.
//
//   import * as libsignal from "@signalapp/libsignal-client";
//   const provider = createLibsignalProvider({ libsignal, store: new MemoryKeyStore() });
//
// Every secret lives in `store` (a KeyValueStore): the identity key pair, the registration id,
// the private prekeys, sessions and the remote identity keys seen. A persistent store must be
// protected as the app's most sensitive data (Android Keystore-wrapped, iOS Keychain...).

import { fromBase64, toBase64 } from "./wire.js";

/**
 * A key-value store for the provider's state. Values are Uint8Array (serialised libsignal
 * records) or JSON-compatible values; every method may be async.
 * @typedef {object} KeyValueStore
 * @property {(key: string) => Promise<any>} get   undefined/null when absent
 * @property {(key: string, value: any) => Promise<void>} set
 * @property {(key: string) => Promise<void>} delete
 */

/** @implements {KeyValueStore} */
export class MemoryKeyStore {
  constructor() {
    /** @type {Map<string, any>} */
    this.map = new Map();
  }
  /** @param {string} key */
  async get(key) {
    return this.map.get(key);
  }
  /** @param {string} key @param {any} value */
  async set(key, value) {
    this.map.set(key, value);
  }
  /** @param {string} key */
  async delete(key) {
    this.map.delete(key);
  }
}

const MAX_ID = 0xffffff; // prekey ids are 24 bits (docs/e2ee.md)

/** @param {Uint8Array} a @param {Uint8Array} b */
function sameBytes(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * @param {{libsignal: any, store: KeyValueStore, random?: () => number}} options
 *   `libsignal`: the module object of `@signalapp/libsignal-client` (0.103 tested)
 * @returns {import("./provider.js").CryptoProvider}
 */
export function createLibsignalProvider({ libsignal, store, random = Math.random }) {
  const S = libsignal;
  /** @type {import("./provider.js").DeviceAddress | null} */
  let local = null;
  let prefix = "";
  const k = (/** @type {string} */ key) => `${prefix}${key}`;
  /** @param {import("./provider.js").DeviceAddress} a */
  const address = (a) => S.ProtocolAddress.new(`${a.userId}.${a.deviceId}`, 1);
  const localAddress = () => {
    if (!local) throw new Error("the provider is not bound to a device (bind() first)");
    return address(local);
  };
  const b64 = toBase64;
  const unb64 = fromBase64;

  async function identityPair() {
    const raw = await store.get(k("identity"));
    if (raw) return S.IdentityKeyPair.deserialize(raw);
    const pair = S.IdentityKeyPair.generate();
    await store.set(k("identity"), pair.serialize());
    return pair;
  }
  async function registrationId() {
    let id = await store.get(k("registration-id"));
    if (!id) {
      id = 1 + Math.floor(random() * 16380);
      await store.set(k("registration-id"), id);
    }
    return /** @type {number} */ (id);
  }
  /** The next id of a kind (1..2^24-1, wrapping). @param {string} kind */
  async function nextId(kind) {
    const current = (await store.get(k(`next:${kind}`))) ?? 1;
    await store.set(k(`next:${kind}`), (current % MAX_ID) + 1);
    return /** @type {number} */ (current);
  }

  const sessions = new (class extends S.SessionStore {
    /** @param {any} name @param {any} record */
    async saveSession(name, record) {
      await store.set(k(`session:${name.toString()}`), record.serialize());
    }
    /** @param {any} name */
    async getSession(name) {
      const raw = await store.get(k(`session:${name.toString()}`));
      return raw ? S.SessionRecord.deserialize(raw) : null;
    }
    /** @param {any[]} names */
    async getExistingSessions(names) {
      return Promise.all(names.map(async (n) => S.SessionRecord.deserialize(await store.get(k(`session:${n.toString()}`)))));
    }
  })();
  const identities = new (class extends S.IdentityKeyStore {
    async getIdentityKey() {
      return (await identityPair()).privateKey;
    }
    async getLocalRegistrationId() {
      return registrationId();
    }
    /** @param {any} name @param {any} key */
    async saveIdentity(name, key) {
      const previous = await store.get(k(`remote-identity:${name.toString()}`));
      await store.set(k(`remote-identity:${name.toString()}`), key.serialize());
      return previous && !sameBytes(previous, key.serialize()) ? S.IdentityChange.ReplacedExisting : S.IdentityChange.NewOrUnchanged;
    }
    /** Trust on first use; a changed key only after the server announced it (forgetIdentity).
     * @param {any} name @param {any} key */
    async isTrustedIdentity(name, key) {
      const known = await store.get(k(`remote-identity:${name.toString()}`));
      return !known || sameBytes(known, key.serialize());
    }
    /** @param {any} name */
    async getIdentity(name) {
      const raw = await store.get(k(`remote-identity:${name.toString()}`));
      return raw ? S.PublicKey.deserialize(raw) : null;
    }
  })();
  const preKeys = new (class extends S.PreKeyStore {
    /** @param {number} id @param {any} record */
    async savePreKey(id, record) {
      await store.set(k(`prekey:${id}`), record.serialize());
    }
    /** @param {number} id */
    async getPreKey(id) {
      const raw = await store.get(k(`prekey:${id}`));
      if (!raw) throw new Error(`no one-time prekey ${id}`);
      return S.PreKeyRecord.deserialize(raw);
    }
    /** @param {number} id */
    async removePreKey(id) {
      await store.delete(k(`prekey:${id}`));
    }
  })();
  const signedPreKeys = new (class extends S.SignedPreKeyStore {
    /** @param {number} id @param {any} record */
    async saveSignedPreKey(id, record) {
      await store.set(k(`signed-prekey:${id}`), record.serialize());
    }
    /** @param {number} id */
    async getSignedPreKey(id) {
      const raw = await store.get(k(`signed-prekey:${id}`));
      if (!raw) throw new Error(`no signed prekey ${id}`);
      return S.SignedPreKeyRecord.deserialize(raw);
    }
  })();
  const kyberPreKeys = new (class extends S.KyberPreKeyStore {
    /** @param {number} id @param {any} record */
    async saveKyberPreKey(id, record) {
      await store.set(k(`kyber-prekey:${id}`), record.serialize());
    }
    /** @param {number} id */
    async getKyberPreKey(id) {
      const raw = await store.get(k(`kyber-prekey:${id}`));
      if (!raw) throw new Error(`no Kyber prekey ${id}`);
      return S.KyberPreKeyRecord.deserialize(raw);
    }
    /** A one-time Kyber key is spent; the last-resort one stays. @param {number} id */
    async markKyberPreKeyUsed(id) {
      if (!(await store.get(k(`kyber-last-resort:${id}`)))) await store.delete(k(`kyber-prekey:${id}`));
    }
  })();

  /** @param {number} count */
  async function oneTimePrekeys(count) {
    const out = [];
    for (let i = 0; i < count; i += 1) {
      const id = await nextId("prekey");
      const key = S.PrivateKey.generate();
      await preKeys.savePreKey(id, S.PreKeyRecord.new(id, key.getPublicKey(), key));
      out.push({ id, public_key: b64(key.getPublicKey().serialize()) });
    }
    return out;
  }
  /** @param {any} identityPrivate @param {boolean} lastResort */
  async function kyberPrekey(identityPrivate, lastResort) {
    const id = await nextId("kyber");
    const pair = S.KEMKeyPair.generate();
    const signature = identityPrivate.sign(pair.getPublicKey().serialize());
    await kyberPreKeys.saveKyberPreKey(id, S.KyberPreKeyRecord.new(id, Date.now(), pair, signature));
    if (lastResort) await store.set(k(`kyber-last-resort:${id}`), true);
    return { id, public_key: b64(pair.getPublicKey().serialize()), signature: b64(signature) };
  }
  /** @param {{oneTimePrekeys: number, kyberPrekeys: number}} counts */
  async function refill(counts) {
    if (!local) throw new Error("the provider is not bound to a device (bind() first)");
    const pair = await identityPair();
    const kyber = [];
    for (let i = 0; i < counts.kyberPrekeys; i += 1) kyber.push(await kyberPrekey(pair.privateKey, false));
    return {
      device_id: local.deviceId,
      registration_id: await registrationId(),
      identity_key: b64(pair.publicKey.serialize()),
      one_time_prekeys: await oneTimePrekeys(counts.oneTimePrekeys),
      kyber_prekeys: kyber,
    };
  }

  return {
    async bind(device) {
      local = device;
      prefix = `signal:${device.userId}.${device.deviceId}:`;
    },
    createPrekeys: refill,
    async createKeys(counts) {
      const upload = await refill(counts);
      const pair = await identityPair();
      const id = await nextId("signed-prekey");
      const key = S.PrivateKey.generate();
      const signature = pair.privateKey.sign(key.getPublicKey().serialize());
      await signedPreKeys.saveSignedPreKey(id, S.SignedPreKeyRecord.new(id, Date.now(), key.getPublicKey(), key, signature));
      return {
        ...upload,
        signed_prekey: { id, public_key: b64(key.getPublicKey().serialize()), signature: b64(signature) },
        last_resort_kyber_prekey: await kyberPrekey(pair.privateKey, true),
      };
    },
    async isRegistered() {
      return Boolean(await store.get(k("registered")));
    },
    async markRegistered() {
      await store.set(k("registered"), true);
    },
    async hasSession(remote) {
      const record = await sessions.getSession(address(remote));
      return Boolean(record && record.hasCurrentState());
    },
    async startSession(remote, d) {
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
      await S.processPreKeyBundle(bundle, address(remote), localAddress(), sessions, identities);
    },
    async encrypt(remote, plaintext) {
      const message = await S.signalEncrypt(plaintext, address(remote), localAddress(), sessions, identities);
      return { type: message.type(), body: new Uint8Array(message.serialize()) };
    },
    async decrypt(remote, type, body) {
      if (type === S.CiphertextMessageType.PreKey) {
        const message = S.PreKeySignalMessage.deserialize(body);
        return S.signalDecryptPreKey(message, address(remote), localAddress(), sessions, identities, preKeys, signedPreKeys, kyberPreKeys);
      }
      if (type === S.CiphertextMessageType.Whisper) {
        return S.signalDecrypt(S.SignalMessage.deserialize(body), address(remote), localAddress(), sessions, identities);
      }
      throw new Error(`unknown ciphertext type ${type}`);
    },
    async dropSession(remote) {
      await store.delete(k(`session:${address(remote).toString()}`));
    },
    async forgetIdentity(remote) {
      await store.delete(k(`session:${address(remote).toString()}`));
      await store.delete(k(`remote-identity:${address(remote).toString()}`));
    },
  };
}
