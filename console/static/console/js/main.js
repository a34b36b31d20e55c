// The healthchat web console: sign in, then the conversation list, the chat and (doctors) the
// consultation requests and availability switch, and (a second tab) appointments, all through the JavaScript SDK
// (@healthchat/client). Other screens (the call screen) plug in through the DOM events
// `hc:session` ({session}) and `hc:conversation` ({conversation, session}) and the
// #call-slot element in the chat header.
import { AppointmentsScreen } from "./appointments.js";
import { Consultations } from "./consultations.js";
import { ConversationList } from "./conversations.js";
import { ChatView } from "./chat.js";
import { byId } from "./dom.js";
import { openSession, forgetToken, storedToken, staticTokenProvider } from "./session.js";
import { firebaseSignOut, restoredFirebaseUser, setUpSignIn } from "./signin.js";

const config = JSON.parse(byId("console-config").textContent ?? "{}");

/** @param {import("./session.js").TokenProvider} getToken */
async function start(getToken) {
  const session = await openSession(getToken);
  const { client, me } = session;
  byId("screen-signin").hidden = true;
  byId("screen-workspace").hidden = false;
  byId("topbar-tools").hidden = false;
  byId("role-label").textContent = me.role === "doctor" ? "· doctor console" : "· patient";
  byId("me-name").textContent = me.display_name || me.phone_number || "";
  document.body.dataset.role = me.role;
  const connection = byId("connection");
  client.on("state", (state) => {
    connection.textContent = state === "ready" ? "online" : state === "closed" ? "signed out" : `${state}…`;
    connection.dataset.state = state;
  });
  const list = new ConversationList(session, (c) => void chat.open(c));
  const chat = new ChatView(session, list);
  const consultations = new Consultations(session, () => list.load());
  const showTab = setUpTabs();
  // An admitted consultation: its chat on the chat screen, and the call placed from there.
  const appointments = new AppointmentsScreen(session, async ({ conversationId, media }) => {
    await list.load();
    const conversation = list.items.get(conversationId);
    if (!conversation) return;
    showTab("chat");
    await chat.open(conversation);
    if (media) byId(`call-${media}`).click();
  });
  // A call rings on the chat screen: show it whichever screen is open.
  client.on("frame", (frame) => {
    if (frame.type === "call.invite") showTab("chat");
  });
  document.addEventListener("hc:presence", () => chat.showPresence());
  // The browser knows first when the network goes: drop the socket at once instead of waiting
  // for a ping to time out (the SDK reconnects, with its backoff, until the network is back).
  window.addEventListener("offline", () => client.dropConnection());
  byId("sign-out").addEventListener("click", async () => {
    client.close();
    forgetToken();
    await session.store.clear(); // nothing of this user's stays in the browser
    await firebaseSignOut();
    location.reload();
  });
  /** @type {any} */ (window).healthchat = { session, list, chat, consultations, appointments };
  document.dispatchEvent(new CustomEvent("hc:session", { detail: { session } }));
  await list.load();
  await consultations.load();
  await appointments.load();
  await client.connect();
  document.body.dataset.ready = "true";
}

/** The two screens (chat, appointments) as tabs: click or arrow keys (WAI-ARIA tabs pattern).
 * @returns {(name: "chat" | "appointments") => void} show a screen */
function setUpTabs() {
  const tabs = /** @type {HTMLButtonElement[]} */ ([byId("tab-chat"), byId("tab-appointments")]);
  /** @param {HTMLButtonElement} chosen */
  const select = (chosen) => {
    for (const tab of tabs) {
      const on = tab === chosen;
      tab.setAttribute("aria-selected", String(on));
      tab.tabIndex = on ? 0 : -1;
      byId(/** @type {string} */ (tab.getAttribute("aria-controls"))).hidden = !on;
    }
    document.body.dataset.screen = chosen.id.replace("tab-", "");
  };
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
      const next = tabs[(i + (event.key === "ArrowRight" ? 1 : tabs.length - 1)) % tabs.length];
      select(next);
      next.focus();
    });
  });
  select(tabs[0]);
  return (name) => select(/** @type {HTMLButtonElement} */ (byId(`tab-${name}`)));
}

/** @param {import("./session.js").TokenProvider} provider */
async function signIn(provider) {
  try {
    await start(provider);
  } catch (e) {
    forgetToken();
    throw e;
  }
}

setUpSignIn(config, signIn);
const saved = storedToken();
const restore = saved ? Promise.resolve(staticTokenProvider(saved)) : restoredFirebaseUser(config);
restore
  .then((provider) => (provider ? signIn(provider) : undefined))
  .catch((e) => {
    byId("signin-error").textContent = e instanceof Error ? e.message : String(e);
  })
  .finally(() => {
    document.body.dataset.loaded = "true";
  });
