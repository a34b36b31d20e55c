// @healthchat/client: the public surface.
export { HealthchatClient, frameProblem, reconnectDelay, tokenExpiry } from "./client.js";
export { createRestClient, cursorOf, unwrap } from "./rest.js";
export { MemoryStore } from "./stores.js";
export { IndexedDBStore } from "./indexeddb-store.js";
export * from "./errors.js";
export { CLOSE_CODES, ERROR_CODES, SERVER_FRAME_TYPES, CLIENT_FRAME_TYPES } from "./generated/constants.js";
export { EndToEnd, attachE2EE, E2EE_MAX_REPAIRS } from "./e2ee/manager.js";
export { createLibsignalProvider, MemoryKeyStore } from "./e2ee/libsignal.js";
export { encodeCiphertext, decodeCiphertext, WIRE_VERSION } from "./e2ee/wire.js";
export { ReceiptTracker } from "./receipts.js";
export { TypingIndicator } from "./typing.js";
export { PresenceTracker } from "./presence.js";
export { Timeline, deleteMessage, editMessage, historyPage } from "./messages.js";
export {
  GroupEvents,
  addMember,
  changeRole,
  createGroup,
  getGroup,
  leaveGroup,
  removeGroupAvatar,
  removeMember,
  setGroupAvatar,
  updateGroup,
} from "./groups.js";
export { addReaction, listPins, pinMessage, removeReaction, unpinMessage } from "./annotations.js";
export { listMentions, searchMessages } from "./search.js";
export {
  cancelScheduledMessage,
  editScheduledMessage,
  getScheduledMessage,
  listScheduledMessages,
  onScheduledMessageUpdated,
  scheduleMessage,
} from "./scheduled.js";
export { downloadAttachment, sha256Hex, uploadAttachment, waitForAttachment } from "./attachments.js";
export {
  acceptConsultation,
  cancelConsultation,
  completeConsultation,
  declineConsultation,
  doctorAvailability,
  doctorRatings,
  editRating,
  getAvailability,
  getConsultation,
  getRating,
  listConsultations,
  onConsultationUpdated,
  rateConsultation,
  replyToRating,
  requestConsultation,
  setAvailability,
  startConsultation,
} from "./consultations.js";
export {
  AppointmentNotConfirmedError,
  AppointmentStore,
  FINAL_APPOINTMENT_STATES,
  appointmentIcsUrl,
  bookAppointment,
  cancelAppointment,
  dateIn,
  downloadAppointmentIcs,
  getAppointment,
  getSchedule,
  listAppointments,
  listSlots,
  localTimeZone,
  onAppointmentUpdated,
  rescheduleAppointment,
  revokeCalendarFeed,
  rotateCalendarFeed,
  setSchedule,
} from "./appointments.js";
export { WaitingRoom } from "./waiting-room.js";
export {
  OnDemandQueue,
  acceptOnDemand,
  cancelOnDemand,
  getOnDemand,
  listOnDemand,
  onOnDemandUpdated,
  requestFirstAvailable,
} from "./on-demand.js";
export { CallManager } from "./calls.js";
export { CallSession } from "./call-session.js";
export * from "./call-errors.js";
