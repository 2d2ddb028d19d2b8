// Test doubles for what node lacks: a WebSocket the test drives, a tiny DOM (only what
// bind.js and client.js use), and Web Locks.

/** @typedef {import("../json.js").Dict} Dict */

/** A WebSocket whose server side is the test: open(), receive(frame), drop(). */
export class FakeSocket {
  /** @type {FakeSocket[]} */
  static instances = [];

  /** @param {string} url */
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    /** @type {Dict[]} */
    this.sent = [];
    /** @type {{code: number, reason: string} | null} */
    this.closedWith = null;
    /** @type {Map<string, ((event: any) => void)[]>} */
    this.listeners = new Map();
    FakeSocket.instances.push(this);
  }

  /** @param {string} type @param {(event: any) => void} listener */
  addEventListener(type, listener) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  /** @param {string} type @param {unknown} event */
  emit(type, event) {
    for (const listener of this.listeners.get(type) ?? []) listener(event);
  }

  /** @param {string} text */
  send(text) {
    if (this.readyState !== 1) throw new Error("not open");
    this.sent.push(JSON.parse(text));
  }

  /** @param {number} [code] @param {string} [reason] */
  close(code = 1000, reason = "") {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    this.closedWith = { code, reason };
    queueMicrotask(() => {
      this.readyState = 3;
      this.emit("close", { code, reason });
    });
  }

  // --- the server's side

  open() {
    this.readyState = 1;
    this.emit("open", {});
  }

  /** @param {unknown} frame */
  receive(frame) {
    this.emit("message", { data: JSON.stringify(frame) });
  }

  /** The connection broke. @param {number} [code] */
  drop(code = 1006) {
    this.readyState = 3;
    this.emit("close", { code, reason: "" });
  }

  /** Frames sent since the last take(). @returns {Dict[]} */
  take() {
    return this.sent.splice(0);
  }
}

/** Let promises and queued microtasks run (saves, flushes). */
export async function settle(rounds = 20) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** An element of a tiny DOM: attributes, children, textContent, attribute selectors. */
export class FakeElement {
  /**
   * @param {Record<string, string>} [attrs]
   * @param {(FakeElement | string)[]} [children]
   */
  constructor(attrs = {}, children = []) {
    /** @type {Map<string, string>} */
    this.attrs = new Map(Object.entries(attrs));
    /** @type {FakeElement | null} */
    this.parent = null;
    /** @type {FakeElement[]} */
    this.children = [];
    this._text = "";
    this.hidden = false;
    this.textWrites = 0;
    for (const child of children) {
      if (typeof child === "string") this._text += child;
      else {
        child.parent = this;
        this.children.push(child);
      }
    }
  }

  /** @param {string} name */
  getAttribute(name) {
    return this.attrs.get(name) ?? null;
  }

  /** @param {string} name @param {string} value */
  setAttribute(name, value) {
    this.attrs.set(name, String(value));
  }

  /** @param {string} name */
  hasAttribute(name) {
    return this.attrs.has(name);
  }

  /** @param {string} name */
  removeAttribute(name) {
    this.attrs.delete(name);
  }

  /** @returns {string} */
  get textContent() {
    return this._text + this.children.map((c) => c.textContent).join("");
  }

  set textContent(value) {
    this.children = [];
    this._text = String(value);
    this.textWrites += 1;
  }

  /** "[attr]" only. @param {string} selector @returns {string} */
  static attrOf(selector) {
    const m = /^\[([a-z-]+)\]$/.exec(selector);
    if (!m) throw new Error(`the fake DOM knows [attr] selectors only, not ${selector}`);
    return m[1];
  }

  /** @param {string} selector @returns {FakeElement[]} */
  querySelectorAll(selector) {
    const attr = FakeElement.attrOf(selector);
    /** @type {FakeElement[]} */
    const out = [];
    /** @param {FakeElement} el */
    const walk = (el) => {
      for (const c of el.children) {
        if (c.hasAttribute(attr)) out.push(c);
        walk(c);
      }
    };
    walk(this);
    return out;
  }

  /** @param {string} selector @returns {FakeElement | null} */
  closest(selector) {
    const attr = FakeElement.attrOf(selector);
    /** @type {FakeElement | null} */
    let el = this;
    while (el !== null && !el.hasAttribute(attr)) el = el.parent;
    return el;
  }

  /** @param {string} id @returns {FakeElement | null} */
  getElementById(id) {
    if (this.getAttribute("id") === id) return this;
    for (const c of this.children) {
      const found = c.getElementById(id);
      if (found) return found;
    }
    return null;
  }
}

/** @param {FakeElement} root @returns {any} a Document as far as the client is concerned */
export function fakeDocument(root) {
  return root;
}

/** Web Locks for one process: request(name, [options], callback). */
export class FakeLocks {
  constructor() {
    /** @type {Set<string>} */
    this.held = new Set();
  }

  /**
   * @param {string} name
   * @param {any} optionsOrCallback
   * @param {any} [maybeCallback]
   */
  async request(name, optionsOrCallback, maybeCallback) {
    const callback = typeof optionsOrCallback === "function" ? optionsOrCallback : maybeCallback;
    const options = typeof optionsOrCallback === "function" ? {} : optionsOrCallback;
    if (this.held.has(name)) {
      if (options.ifAvailable) return callback(null);
      throw new Error(`the fake locks do not queue: ${name} is held`);
    }
    this.held.add(name);
    try {
      return await callback({ name, mode: "exclusive" });
    } finally {
      this.held.delete(name);
    }
  }

  /** @returns {any} */
  asLockManager() {
    return this;
  }
}
