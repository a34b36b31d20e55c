// Doctors: consultation requests waiting for them (paid, awaiting the doctor) to accept or
// decline, and the availability switch. Patients see their own open requests (read-only).
import { onConsultationUpdated } from "@healthchat/client";
import { byId, el } from "./dom.js";

/** @typedef {import("./conversations.js").Session} Session */

export class Consultations {
  /** @param {Session} session @param {() => Promise<void>} onChange */
  constructor(session, onChange) {
    this.session = session;
    this.onChange = onChange;
    this.doctor = session.me.role === "doctor";
    session.client.on("ready", () => void this.load());
    // a hint (not logged): list again on every change, and after every reconnect
    onConsultationUpdated(session.client, () => void this.load());
    if (this.doctor) this.setUpAvailability();
  }

  async load() {
    const query = this.doctor ? { role: "doctor", state: "paid" } : { role: "patient" };
    const { data } = await this.session.rest.GET("/api/v1/consultations", { params: { query: { ...query, limit: 50 } } });
    const items = (data?.results ?? []).filter((c) =>
      this.doctor ? true : ["requested", "paid", "accepted", "in_progress"].includes(c.state),
    );
    byId("consultations-title").textContent = this.doctor ? "Consultation requests" : "My consultations";
    byId("no-consultations").hidden = items.length > 0;
    byId("consultation-list").replaceChildren(...items.map((c) => this.row(c)));
  }

  /** @param {any} c */
  row(c) {
    const who = this.doctor ? `Patient ${c.patient_id}` : `Doctor ${c.doctor_id}`;
    const label = `consultation-${c.id}`;
    return el(
      "li",
      { class: "consultation", dataset: { consultationId: String(c.id), state: c.state }, "aria-labelledby": label },
      el("p", { id: label, class: "consultation-title" }, `${who} · ${c.kind} · ${c.state}`),
      c.reason ? el("p", { class: "reason" }, c.reason) : null,
      this.doctor && c.state === "paid"
        ? el(
            "div",
            { class: "actions" },
            el("button", { type: "button", "aria-describedby": label, onclick: () => this.act(c.id, "accept") }, "Accept"),
            el("button", { type: "button", class: "secondary", "aria-describedby": label, onclick: () => this.act(c.id, "decline") }, "Decline"),
          )
        : null,
    );
  }

  /** @param {number} id @param {"accept" | "decline"} action */
  async act(id, action) {
    const { rest } = this.session;
    const params = { path: { consultation_id: id } };
    const { error } =
      action === "accept"
        ? await rest.POST("/api/v1/consultations/{consultation_id}/accept", { params })
        : await rest.POST("/api/v1/consultations/{consultation_id}/decline", { params, body: {} });
    const li = document.querySelector(`li[data-consultation-id="${id}"]`);
    if (error && li) {
      li.append(el("p", { class: "error", role: "alert" }, /** @type {any} */ (error).error?.message ?? "Refused."));
      return;
    }
    await this.load();
    await this.onChange();
  }

  setUpAvailability() {
    byId("availability-control").hidden = false;
    const box = /** @type {HTMLInputElement} */ (byId("availability"));
    const state = byId("availability-state");
    /** @param {any} a */
    const show = (a) => {
      box.checked = a.online;
      state.textContent = a.online ? (a.available_now ? "(on, within hours)" : "(on, outside hours)") : "(off)";
    };
    void this.session.rest.GET("/api/v1/availability").then(({ data }) => data && show(data));
    box.addEventListener("change", async () => {
      box.disabled = true;
      const { data } = await this.session.rest.PUT("/api/v1/availability", { body: { online: box.checked } });
      box.disabled = false;
      if (data) show(data);
      else box.checked = !box.checked;
    });
  }
}
