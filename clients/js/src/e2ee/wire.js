// How the SDK frames what it puts in `message.send` `ciphertexts` (the server never looks inside;
// docs/e2ee.md "The SDK's ciphertext format"). No cryptography here: the provider encrypts, this
// only adds the header a recipient needs to pick the session.
//
//   byte 0        format version (1)
//   bytes 1..8    the sending device's id, unsigned big-endian (the server's messages carry the
//                 sender's user id but not the device; libsignal needs both to find the session)
//   byte 9        libsignal's CiphertextMessageType (3 PreKey, 2 Whisper)
//   bytes 10..    the serialised libsignal message
//
// The plaintext inside is UTF-8 JSON `{"text": "..."}` (more fields may come, e.g. an encrypted
// attachment's `{id, key, iv}`, as tests/e2ee/signal_clients.mjs sends).

export const WIRE_VERSION = 1;
const HEADER = 10;

/**
 * @param {{senderDeviceId: number, type: number, body: Uint8Array}} sealed
 * @returns {string} base64
 */
export function encodeCiphertext({ senderDeviceId, type, body }) {
  const out = new Uint8Array(HEADER + body.length);
  const view = new DataView(out.buffer);
  out[0] = WIRE_VERSION;
  view.setBigUint64(1, BigInt(senderDeviceId));
  out[9] = type;
  out.set(body, HEADER);
  return toBase64(out);
}

/**
 * @param {string} text base64 from `message.ciphertext`
 * @returns {{senderDeviceId: number, type: number, body: Uint8Array}}
 */
export function decodeCiphertext(text) {
  const raw = fromBase64(text);
  if (raw.length <= HEADER || raw[0] !== WIRE_VERSION) throw new Error("not a ciphertext of this SDK's format");
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return { senderDeviceId: Number(view.getBigUint64(1)), type: raw[9], body: raw.slice(HEADER) };
}

/** @param {{text: string}} payload */
export function encodePlaintext(payload) {
  return new TextEncoder().encode(JSON.stringify(payload));
}

/** @param {Uint8Array} bytes @returns {{text: string} & Record<string, unknown>} */
export function decodePlaintext(bytes) {
  const payload = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  if (!payload || typeof payload !== "object" || typeof payload.text !== "string") throw new Error("a plaintext without text");
  return payload;
}

/** @param {Uint8Array} bytes */
export function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

/** @param {string} text standard base64, padding optional */
export function fromBase64(text) {
  const padded = text.padEnd(Math.ceil(text.length / 4) * 4, "=");
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}
