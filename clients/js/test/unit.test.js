// The SDK's pure parts, without a server: close codes → typed errors, frame checks, the reconnect
// delays and the token expiry reader.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  AuthenticationError,
  CLOSE_CODES,
  CloseError,
  ConnectionDroppedError,
  ForbiddenError,
  ServerBusyError,
  closeError,
  frameProblem,
  reconnectDelay,
  tokenExpiry,
} from "../src/index.js";

describe("close codes", () => {
  it("gives every close code of the AsyncAPI document its own error class", () => {
    const classes = new Set();
    for (const code of CLOSE_CODES) {
      const error = closeError(code, "", null);
      assert.ok(error instanceof CloseError);
      assert.ok(!(error instanceof ConnectionDroppedError), `${code} has no class of its own`);
      assert.equal(error.code, code);
      classes.add(error.constructor);
    }
    assert.equal(classes.size, CLOSE_CODES.length);
    assert.ok(closeError(4401, "", null) instanceof AuthenticationError);
    assert.ok(closeError(4403, "", null) instanceof ForbiddenError);
    assert.ok(closeError(1013, "", null) instanceof ServerBusyError);
    assert.ok(closeError(1006, "", null) instanceof ConnectionDroppedError);
  });
});

describe("frame checks", () => {
  it("accepts the server's frames and names what is wrong with others", () => {
    const message = { id: 1, conversation_id: 2, seq: 3, body: "x" };
    assert.equal(frameProblem({ type: "message.new", data: { message }, event: 4 }), null);
    assert.equal(frameProblem({ type: "error", error: { code: "invalid_frame", message: "m" } }), null);
    assert.match(String(frameProblem([])), /not a JSON object/);
    assert.match(String(frameProblem({ type: "nope", data: {} })), /unknown frame type/);
    assert.match(String(frameProblem({ type: "message.new", data: { message: { id: 1 } }, event: 1 })), /seq/);
    assert.match(String(frameProblem({ type: "sync.done", data: {} })), /cursor/);
  });
});

describe("reconnect delays", () => {
  const hint = { min_ms: 500, max_ms: 5000 };
  it("draws from the server's hint after losing an authenticated socket", () => {
    assert.equal(reconnectDelay({ hint, authenticated: true, failedAttempts: 0, retryAfterMs: null, random: () => 0 }), 500);
    assert.equal(reconnectDelay({ hint, authenticated: true, failedAttempts: 0, retryAfterMs: null, random: () => 1 }), 5000);
  });
  it("backs off exponentially with full jitter, capped by max_ms", () => {
    const top = (/** @type {number} */ n) =>
      reconnectDelay({ hint, authenticated: false, failedAttempts: n, retryAfterMs: null, random: () => 1 });
    assert.deepEqual([1, 2, 3, 4, 10].map(top), [1000, 2000, 4000, 5000, 5000]);
    assert.equal(reconnectDelay({ hint, authenticated: false, failedAttempts: 3, retryAfterMs: null, random: () => 0 }), 0);
  });
  it("waits retry_after_ms plus jitter after server_busy", () => {
    assert.equal(reconnectDelay({ hint, authenticated: false, failedAttempts: 2, retryAfterMs: 1370, random: () => 0.5 }), 1620);
  });
});

describe("token expiry", () => {
  it("reads exp from a JWT and null from anything else", () => {
    const payload = Buffer.from(JSON.stringify({ exp: 1795496192, sub: "u" })).toString("base64url");
    assert.equal(tokenExpiry(`e30.${payload}.sig`), 1795496192);
    assert.equal(tokenExpiry("not-a-token"), null);
  });
});
