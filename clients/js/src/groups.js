// Groups over REST (create, rename, members, roles, leave) and the group-change frames as events.
// A group is a conversation: its id is the conversation's id. See docs/clients.md#groups--srcgroupsjs.
import { Emitter } from "./emitter.js";
import { unwrap } from "./rest.js";

/** @typedef {import("./client.js").HealthchatClient} HealthchatClient */
/** @typedef {import("./client.js").GroupEventFrame} GroupEventFrame */
/** @typedef {import("./client.js").GroupEventType} GroupEventType */
/** @typedef {import("openapi-fetch").Client<import("./rest.js").paths>} RestClient */
/** @typedef {import("./rest.js").components["schemas"]["ConversationOut"]} Conversation */
/** @typedef {"owner" | "admin" | "member"} GroupRole */

/**
 * @param {RestClient} rest
 * @param {{name: string, description?: string, memberIds?: number[], historyVisibleToNewMembers?: boolean, e2ee?: boolean}} group
 * @returns {Promise<Conversation>}
 */
export function createGroup(rest, group) {
  // The schema marks the server-side defaults as required; omitted fields take them.
  /** @type {Partial<import("./rest.js").components["schemas"]["GroupCreateInputRequest"]> & {name: string}} */
  const body = { name: group.name };
  if (group.description != null) body.description = group.description;
  if (group.memberIds) body.member_ids = group.memberIds;
  if (group.historyVisibleToNewMembers != null) body.history_visible_to_new_members = group.historyVisibleToNewMembers;
  if (group.e2ee != null) body.e2ee = group.e2ee;
  return unwrap(rest.POST("/api/v1/groups", { body: /** @type {any} */ (body) }));
}

/** @param {RestClient} rest @param {number} groupId @returns {Promise<Conversation>} */
export function getGroup(rest, groupId) {
  return unwrap(rest.GET("/api/v1/groups/{group_id}", { params: { path: { group_id: groupId } } }));
}

/**
 * Rename, describe, or change whether new members see the history (admins).
 * @param {RestClient} rest @param {number} groupId
 * @param {{name?: string, description?: string, historyVisibleToNewMembers?: boolean}} changes
 * @returns {Promise<Conversation>}
 */
export function updateGroup(rest, groupId, changes) {
  /** @type {import("./rest.js").components["schemas"]["PatchedGroupUpdateInputRequest"]} */
  const body = {};
  if (changes.name != null) body.name = changes.name;
  if (changes.description != null) body.description = changes.description;
  if (changes.historyVisibleToNewMembers != null) body.history_visible_to_new_members = changes.historyVisibleToNewMembers;
  return unwrap(rest.PATCH("/api/v1/groups/{group_id}", { params: { path: { group_id: groupId } }, body }));
}

/** @param {RestClient} rest @param {number} groupId @param {number} userId @returns {Promise<Conversation>} */
export function addMember(rest, groupId, userId) {
  return unwrap(rest.POST("/api/v1/groups/{group_id}/members", { params: { path: { group_id: groupId } }, body: { user_id: userId } }));
}

/** @param {RestClient} rest @param {number} groupId @param {number} userId @returns {Promise<void>} */
export async function removeMember(rest, groupId, userId) {
  await unwrap(rest.DELETE("/api/v1/groups/{group_id}/members/{user_id}", { params: { path: { group_id: groupId, user_id: userId } } }));
}

/** The owner gives `role` to a member (`owner` passes the ownership on).
 * @param {RestClient} rest @param {number} groupId @param {number} userId @param {GroupRole} role
 * @returns {Promise<Conversation>} */
export function changeRole(rest, groupId, userId, role) {
  return unwrap(
    rest.PATCH("/api/v1/groups/{group_id}/members/{user_id}", {
      params: { path: { group_id: groupId, user_id: userId } },
      body: { role },
    }),
  );
}

/**
 * Make one of the caller's own ready, unsent image uploads the group's picture (owner and admins;
 * the group's `avatar` then names it). Upload it first with `uploadAttachment`.
 * @param {RestClient} rest @param {number} groupId @param {number} attachmentId
 * @returns {Promise<Conversation>}
 */
export function setGroupAvatar(rest, groupId, attachmentId) {
  return unwrap(
    rest.PUT("/api/v1/groups/{group_id}/avatar", {
      params: { path: { group_id: groupId } },
      body: { attachment_id: attachmentId },
    }),
  );
}

/** Remove the group's picture (owner and admins; 204). @param {RestClient} rest @param {number} groupId @returns {Promise<void>} */
export async function removeGroupAvatar(rest, groupId) {
  await unwrap(rest.DELETE("/api/v1/groups/{group_id}/avatar", { params: { path: { group_id: groupId } } }));
}

/** @param {RestClient} rest @param {number} groupId @returns {Promise<void>} */
export async function leaveGroup(rest, groupId) {
  await unwrap(rest.POST("/api/v1/groups/{group_id}/leave", { params: { path: { group_id: groupId } } }));
}

/**
 * @typedef {object} GroupChange
 * @property {GroupEventType} type
 * @property {number} conversationId
 * @property {GroupEventFrame["data"]} data   the frame's data (user_id, by, role, name... and the system message)
 */

/** Group changes, once each (live or replayed by sync). @extends {Emitter<{change: GroupChange}>} */
export class GroupEvents extends Emitter {
  /** @param {HealthchatClient} client */
  constructor(client) {
    super();
    this.client = client;
    this.unsubscribe = [
      client.on("groupEvent", (frame) => this.emit("change", { type: frame.type, conversationId: frame.data.conversation_id, data: frame.data })),
    ];
  }

  close() {
    for (const off of this.unsubscribe) off();
  }
}
