// A small typed event emitter for the feature modules (the client has its own).

/** @template {Record<string, any>} E */
export class Emitter {
  constructor() {
    /** @type {{[K in keyof E]?: Set<(value: E[K]) => void>}} */
    this.listeners = {};
  }

  /**
   * @template {keyof E} K
   * @param {K} name @param {(value: E[K]) => void} listener
   * @returns {() => void} unsubscribe
   */
  on(name, listener) {
    const set = /** @type {Set<(value: E[K]) => void>} */ (this.listeners[name] ?? new Set());
    this.listeners[name] = set;
    set.add(listener);
    return () => set.delete(listener);
  }

  /** @template {keyof E} K @param {K} name @param {E[K]} value */
  emit(name, value) {
    for (const listener of this.listeners[name] ?? []) {
      try {
        listener(value);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
