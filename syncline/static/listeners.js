// The client's event listeners: `on(kind, listener)` and `emit(kind, payload)`. A
// listener for "*" hears every kind. A listener that throws does not stop the others;
// its error is reported (observable.js report), so one broken handler cannot stall sync.

import { report } from "./observable.js";

export class Listeners {
  constructor() {
    /** @type {Map<string, Set<(payload: any) => void>>} */
    this._byKind = new Map();
  }

  /**
   * Call `listener` for each event of `kind` ("*": all). Returns a function that removes it.
   * @param {string} kind
   * @param {(payload: any) => void} listener
   * @returns {() => void}
   */
  on(kind, listener) {
    let set = this._byKind.get(kind);
    if (!set) {
      set = new Set();
      this._byKind.set(kind, set);
    }
    // Wrapped, so the same function added twice is two listeners, removed one by one.
    const wrapped = /** @param {any} payload */ (payload) => listener(payload);
    set.add(wrapped);
    return () => {
      set.delete(wrapped);
    };
  }

  /**
   * How many listeners hear `kind` itself ("*" listeners not counted): the client's
   * default answer to "reload" runs only when the application has none.
   * @param {string} kind
   * @returns {number}
   */
  count(kind) {
    return this._byKind.get(kind)?.size ?? 0;
  }

  /**
   * @param {string} kind
   * @param {unknown} payload
   */
  emit(kind, payload) {
    for (const listener of [...(this._byKind.get(kind) ?? []), ...(this._byKind.get("*") ?? [])]) {
      try {
        listener(payload);
      } catch (exc) {
        report(exc);
      }
    }
  }
}
