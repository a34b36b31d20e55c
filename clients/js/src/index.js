// @healthchat/client: the public surface.
export { HealthchatClient, frameProblem, reconnectDelay, tokenExpiry } from "./client.js";
export { createRestClient } from "./rest.js";
export { MemoryStore } from "./stores.js";
export { IndexedDBStore } from "./indexeddb-store.js";
export * from "./errors.js";
export { CLOSE_CODES, ERROR_CODES, SERVER_FRAME_TYPES, CLIENT_FRAME_TYPES } from "./generated/constants.js";
export { EndToEnd, attachE2EE, E2EE_MAX_REPAIRS } from "./e2ee/manager.js";
export { createLibsignalProvider, MemoryKeyStore } from "./e2ee/libsignal.js";
export { encodeCiphertext, decodeCiphertext, WIRE_VERSION } from "./e2ee/wire.js";
