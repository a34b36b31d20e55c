// The crypto provider interface: everything the SDK asks of a Signal-protocol implementation.
// The SDK itself does no cryptography; `createLibsignalProvider` (libsignal.js) implements this
// on the official @signalapp/libsignal-client, which the app injects (Node, React Native...).
// A browser has no provider (docs/clients.md#end-to-end-encryption): encrypted conversations show
// placeholders there.
//
// Devices are addressed by (user id, device id) — the server's ids; a provider maps them to its
// own addresses (libsignal: name "<user_id>.<device_id>", device 1, as docs/e2ee.md says).

/** @typedef {import("../generated/openapi.js").components["schemas"]} Schemas */
/** @typedef {Schemas["KeysPutInputRequest"]} KeysUpload      the body of `PUT /api/v1/keys` */
/** @typedef {Schemas["DeviceBundleOut"]} DeviceBundle       one device of `GET /api/v1/keys/{user_id}` */
/** @typedef {{userId: number, deviceId: number}} DeviceAddress */

/**
 * @typedef {object} CryptoProvider
 * @property {(local: DeviceAddress) => Promise<void>} bind
 *   which device this provider speaks for (called before anything else; the state is kept per
 *   device in the provider's store)
 * @property {(options: {oneTimePrekeys: number, kyberPrekeys: number}) => Promise<KeysUpload>} createKeys
 *   a full upload: the identity key (created once and kept), a new signed prekey, a new
 *   last-resort Kyber prekey and fresh one-time prekeys (private halves kept in the store)
 * @property {(options: {oneTimePrekeys: number, kyberPrekeys: number}) => Promise<KeysUpload>} createPrekeys
 *   a refill: only fresh one-time and one-time Kyber prekeys (with the identity key and
 *   registration id the endpoint requires)
 * @property {() => Promise<boolean>} isRegistered  whether a full upload was made (and acknowledged) for this device
 * @property {() => Promise<void>} markRegistered
 * @property {(remote: DeviceAddress) => Promise<boolean>} hasSession
 * @property {(remote: DeviceAddress, bundle: DeviceBundle) => Promise<void>} startSession
 *   X3DH/PQXDH from a bundle (the remote identity key must be trusted, see forgetIdentity)
 * @property {(remote: DeviceAddress, plaintext: Uint8Array) => Promise<{type: number, body: Uint8Array}>} encrypt
 * @property {(remote: DeviceAddress, type: number, body: Uint8Array) => Promise<Uint8Array>} decrypt
 * @property {(remote: DeviceAddress) => Promise<void>} dropSession
 * @property {(remote: DeviceAddress) => Promise<void>} forgetIdentity
 *   the server announced a new identity key for this device (`identity.changed`): drop the
 *   session and the pinned key, so the next bundle's key is accepted
 */

export {};
