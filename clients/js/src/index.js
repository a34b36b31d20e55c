// @healthchat/client: the public surface.
export { HealthchatClient, frameProblem, reconnectDelay, tokenExpiry } from "./client.js";
export { createRestClient } from "./rest.js";
export { MemoryStore } from "./stores.js";
export * from "./errors.js";
export { CLOSE_CODES, ERROR_CODES, SERVER_FRAME_TYPES, CLIENT_FRAME_TYPES } from "./generated/constants.js";
export { CallManager } from "./calls.js";
export { CallSession } from "./call-session.js";
export * from "./call-errors.js";
