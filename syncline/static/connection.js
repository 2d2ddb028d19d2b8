// One WebSocket driven by a ClientProtocol: the thin I/O around the sans-I/O core.
//
// open    -> protocol.connectionMade(), then flush (hello)
// message -> protocol.receiveText(), the events to the owner, then flush (answers,
//            resends); a frame the client cannot use, or a refusal for good, closes it
// close   -> protocol.connectionLost(), and the owner decides whether to reconnect
//
// A flush first waits until every save the owner has queued is durable (the owner's
// `settled`), so no mutation is sent before it is on disk (invariant 3), then sends what
// dataToSend returns, in order, and sets a timer for the protocol's next deadline (the
// end of a retry_after wait).

/** @typedef {import("./protocol.js").ClientProtocol} ClientProtocol */
/** @typedef {import("./protocol.js").ClientEvent} ClientEvent */

/**
 * The part of a WebSocket this module uses (a browser WebSocket, or a test's fake).
 * @typedef {object} SocketLike
 * @property {number} readyState
 * @property {(data: string) => void} send
 * @property {(code?: number, reason?: string) => void} close
 * @property {(type: string, listener: (event: any) => void) => void} addEventListener
 */

/**
 * @typedef {object} LinkHooks
 * @property {(events: ClientEvent[]) => void} onEvents  after every frame received
 * @property {(info: {wentLive: boolean, code: number, reason: string}) => void} onClose
 * @property {() => Promise<unknown>} [settled]  resolves when every queued save is
 *   durable; returns the same promise as long as no new save was queued
 * @property {() => void} [persist]  queue a save of the pending queue if it changed
 *   (dataToSend may renumber unacknowledged mutations: they must be durable under their
 *   new numbers before any of them goes out, or a page that adopts this queue later
 *   would send the old numbers and apply one twice)
 * @property {() => void} [onSent]  after frames went out
 * @property {() => number} [now]  seconds on a steady clock
 */

const OPEN = 1;

/** @returns {number} */
export function monotonicSeconds() {
  return performance.now() / 1000;
}

export class Link {
  /**
   * @param {ClientProtocol} protocol
   * @param {SocketLike} socket  a socket that is connecting
   * @param {LinkHooks} hooks
   */
  constructor(protocol, socket, hooks) {
    this.protocol = protocol;
    this.socket = socket;
    this.hooks = hooks;
    this.now = hooks.now ?? monotonicSeconds;
    /** The connection got as far as welcome. */
    this.wentLive = false;
    this.closed = false;
    this._closing = false;
    this._flushing = false;
    this._again = false;
    /** @type {ReturnType<typeof setTimeout> | null} */
    this._timer = null;
    socket.addEventListener("open", () => {
      if (this._closing) return;
      protocol.connectionMade();
      void this.flush();
    });
    socket.addEventListener("message", (event) => this._message(event.data));
    socket.addEventListener("close", (event) =>
      this._closed(Number(event.code ?? 1006), String(event.reason ?? "")),
    );
    socket.addEventListener("error", () => {
      // A close event follows.
    });
  }

  /** @param {unknown} data */
  _message(data) {
    if (this._closing || this.closed) return;
    const events = this.protocol.receiveText(typeof data === "string" ? data : "", this.now());
    if (this.protocol.state === "live") this.wentLive = true;
    this.hooks.onEvents(events);
    if (this.protocol.closeRequested !== null || this.protocol.state === "failed") {
      this.close(1000, "client: resuming");
      return;
    }
    void this.flush();
  }

  /** Send what the protocol has to send (after every queued save is durable). */
  async flush() {
    if (this._flushing) {
      this._again = true;
      return;
    }
    this._flushing = true;
    try {
      do {
        this._again = false;
        await this._settled();
        if (this._closing || this.closed || this.socket.readyState !== OPEN) return;
        const frames = this.protocol.dataToSend(this.now());
        if (frames.length && this.hooks.persist) {
          this.hooks.persist();
          await this._settled();
          // Closed meanwhile: nothing went out; the next connection resends from the start.
          if (this._closing || this.closed || this.socket.readyState !== OPEN) return;
        }
        for (const frame of frames) this.socket.send(JSON.stringify(frame));
        if (frames.length && this.hooks.onSent) this.hooks.onSent();
      } while (this._again);
      this._schedule();
    } finally {
      this._flushing = false;
    }
  }

  async _settled() {
    const settled = this.hooks.settled;
    if (!settled) return;
    let current;
    do {
      current = settled();
      try {
        await current;
      } catch {
        // A failed save is the store's to report; sending must not stop for it.
      }
    } while (current !== settled());
  }

  _schedule() {
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    const deadline = this.protocol.nextDeadline();
    if (deadline === null || this.closed) return;
    const wait = Math.max(0, deadline - this.now()) * 1000;
    this._timer = setTimeout(() => {
      this._timer = null;
      void this.flush();
    }, wait + 1);
  }

  /**
   * Close the socket; the close event does the rest.
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = 1000, reason = "") {
    if (this._closing || this.closed) return;
    this._closing = true;
    try {
      this.socket.close(code, reason);
    } catch {
      this._closed(code, reason);
    }
  }

  /** @param {number} code @param {string} reason */
  _closed(code, reason) {
    if (this.closed) return;
    this.closed = true;
    if (this._timer !== null) clearTimeout(this._timer);
    this._timer = null;
    this.protocol.connectionLost();
    this.hooks.onClose({ wentLive: this.wentLive, code, reason });
  }
}
