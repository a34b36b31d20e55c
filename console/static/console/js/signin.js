// The sign-in screen: the Firebase Web SDK's phone flow (real Firebase with reCAPTCHA, or the
// Auth emulator in development and tests), or a pasted ID token (e.g. from
// `manage.py dev_token` on a development server).
import { byId } from "./dom.js";
import { staticTokenProvider } from "./session.js";

/** @typedef {import("./session.js").TokenProvider} TokenProvider */

/**
 * Show the sign-in screen; calls onToken with a token provider once the user signed in.
 * @param {{firebase: {apiKey: string, authDomain: string, projectId: string, emulatorUrl: string}, devTokens: boolean}} config
 * @param {(provider: TokenProvider) => Promise<void>} onToken
 */
export function setUpSignIn(config, onToken) {
  const error = byId("signin-error");
  /** @param {unknown} e */
  const fail = (e) => {
    error.textContent = e instanceof Error ? e.message : String(e);
  };

  const tokenForm = /** @type {HTMLFormElement} */ (byId("token-form"));
  if (!config.devTokens) {
    byId("token-help").textContent = "Paste a Firebase ID token.";
  }
  tokenForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const token = /** @type {HTMLTextAreaElement} */ (byId("token")).value.trim();
    if (!token) return fail("Paste a token first.");
    await onToken(staticTokenProvider(token)).catch(fail);
  });

  if (config.firebase.apiKey) setUpPhone(config.firebase, onToken, fail);
}

/** @type {Promise<{fb: any, instance: any}> | null} */
let firebaseAuth = null;

/** The Firebase app and auth (loaded on first use; its session is kept in sessionStorage).
 * @param {{apiKey: string, authDomain: string, projectId: string, emulatorUrl: string}} firebase */
function loadFirebase(firebase) {
  firebaseAuth ??= import("firebase-auth").then((fb) => {
    const app = fb.initializeApp({
      apiKey: firebase.apiKey,
      authDomain: firebase.authDomain || undefined,
      projectId: firebase.projectId,
    });
    const instance = fb.initializeAuth(app, { persistence: fb.browserSessionPersistence });
    if (firebase.emulatorUrl) fb.connectAuthEmulator(instance, firebase.emulatorUrl, { disableWarnings: true });
    return { fb, instance };
  });
  return firebaseAuth;
}

/** @param {any} user @returns {TokenProvider} */
function providerFor(user) {
  return ({ forceRefresh } = {}) => user.getIdToken(Boolean(forceRefresh));
}

/** A Firebase user still signed in in this tab (after a reload), if any.
 * @param {{firebase: {apiKey: string, authDomain: string, projectId: string, emulatorUrl: string}}} config
 * @returns {Promise<TokenProvider | null>} */
export async function restoredFirebaseUser(config) {
  if (!config.firebase.apiKey) return null;
  const { instance } = await loadFirebase(config.firebase);
  await instance.authStateReady();
  return instance.currentUser ? providerFor(instance.currentUser) : null;
}

/** Sign out of Firebase too, if the phone flow was used. */
export async function firebaseSignOut() {
  if (!firebaseAuth) return;
  const { fb, instance } = await firebaseAuth;
  await fb.signOut(instance);
}

/**
 * @param {{apiKey: string, authDomain: string, projectId: string, emulatorUrl: string}} firebase
 * @param {(provider: TokenProvider) => Promise<void>} onToken
 * @param {(e: unknown) => void} fail
 */
function setUpPhone(firebase, onToken, fail) {
  const form = /** @type {HTMLFormElement} */ (byId("phone-form"));
  form.hidden = false;
  /** @type {any} */
  let confirmation = null;
  /** @type {any} */
  let verifier = null;

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    byId("signin-error").textContent = "";
    const phone = /** @type {HTMLInputElement} */ (byId("phone")).value.trim();
    try {
      const { fb, instance } = await loadFirebase(firebase);
      verifier ??= new fb.RecaptchaVerifier(instance, "recaptcha", { size: "invisible" });
      confirmation = await fb.signInWithPhoneNumber(instance, phone, verifier);
      byId("code-step").hidden = false;
      byId("code").focus();
    } catch (e) {
      fail(e);
    }
  });

  byId("confirm-code").addEventListener("click", async () => {
    byId("signin-error").textContent = "";
    if (!confirmation) return fail("Send a code first.");
    try {
      const code = /** @type {HTMLInputElement} */ (byId("code")).value.trim();
      const { user } = await confirmation.confirm(code);
      await onToken(providerFor(user));
    } catch (e) {
      fail(e);
    }
  });
}
