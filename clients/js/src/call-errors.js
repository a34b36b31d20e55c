// Typed errors for calls: every call_* (and call-related) error code of docs/protocol.md has its
// class, so an app can `catch (e) { if (e instanceof CallNotRingingError) ... }`.
import { HealthchatError, ServerError } from "./errors.js";

/** A call frame the server refused (an `error` reply to a `call.*` request). */
export class CallError extends ServerError {}
/** `call_not_found`: no such call, or this user is not one of its participants. */
export class CallNotFoundError extends CallError {}
/** `call_not_ringing`: accept/reject/cancel/ringing on a call already answered (elsewhere) or over. */
export class CallNotRingingError extends CallError {}
/** `call_not_active`: ice/update/hangup/resume on a call that is over (or not answered yet). */
export class CallNotActiveError extends CallError {}
/** `call_action_not_allowed`: the caller answering or rejecting, the callee cancelling. */
export class CallActionNotAllowedError extends CallError {}
/** `not_call_device`: signalling from a socket that is not this user's socket in the call. */
export class NotCallDeviceError extends CallError {}
/** `call_in_progress`: the conversation already has a call; `callId` names it. */
export class CallInProgressError extends CallError {
  /** @param {import("./errors.js").ServerErrorBody} error @param {string | undefined} ref */
  constructor(error, ref) {
    super(error, ref);
    const id = /** @type {any} */ (error).call_id;
    /** @type {number | null} the call that is already ringing or answered */
    this.callId = typeof id === "number" ? id : null;
  }
}
/** `already_in_call`: the caller is in another call. */
export class AlreadyInCallError extends CallError {}
/** `group_calls_unavailable`: group conversations cannot be called yet. */
export class GroupCallsUnavailableError extends CallError {}
/** `callee_unavailable`: the other member's account is deactivated or deleted. */
export class CalleeUnavailableError extends CallError {}
/** `invalid_sdp`, `sdp_too_large`: the local description was refused. */
export class InvalidSdpError extends CallError {}
/** `invalid_candidate`, `candidate_too_large`: an ICE candidate was refused. */
export class InvalidCandidateError extends CallError {}
/** `invalid_media`, `invalid_reason`: a call frame with a value the server does not accept. */
export class InvalidCallFrameError extends CallError {}

/** `GET /api/v1/calls/turn-credentials` failed (503 `turn_unavailable`, or any other answer). */
export class TurnUnavailableError extends HealthchatError {
  /** @param {string} message @param {number} status @param {string | null} code */
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** @type {Record<string, typeof CallError>} */
const BY_CODE = {
  call_not_found: CallNotFoundError,
  call_not_ringing: CallNotRingingError,
  call_not_active: CallNotActiveError,
  call_action_not_allowed: CallActionNotAllowedError,
  not_call_device: NotCallDeviceError,
  call_in_progress: CallInProgressError,
  already_in_call: AlreadyInCallError,
  group_calls_unavailable: GroupCallsUnavailableError,
  callee_unavailable: CalleeUnavailableError,
  invalid_sdp: InvalidSdpError,
  sdp_too_large: InvalidSdpError,
  invalid_candidate: InvalidCandidateError,
  candidate_too_large: InvalidCandidateError,
  invalid_media: InvalidCallFrameError,
  invalid_reason: InvalidCallFrameError,
};

/**
 * The typed call error for a ServerError from a `call.*` request (other errors are returned as
 * they are: `conversation_not_found`, `blocked`, `rate_limited`, connection errors...).
 * @param {unknown} error
 * @returns {unknown}
 */
export function callError(error) {
  if (!(error instanceof ServerError) || error instanceof CallError) return error;
  const Class = BY_CODE[error.code];
  return Class ? new Class(error.body, error.ref) : error;
}
