// The connection loop of one page (Phoenix's socket.js, in part): open a WebSocket,
// drive it with the ClientProtocol (connection.js), and when it closes open another
// after a jittered backoff, for as long as the client lives. Reconnecting is always
// safe: the protocol resends every unanswered mutation and resubscribes since its
// cursor (invariants 3, 7).
//
//                  start / timer fired / online
//   waiting ------------------------------------------> linked (a socket, "connecting",
//      ^                                                  |     then "live" on welcome)
//      |  socket closed: wait delay/2 + rand * delay/2;   |
//      +--  delay doubles from backoff[0] to backoff[1],  -+
//           back to backoff[0] after a connection that went live
//
//   offline event: linked -> (socket closed) -> offline; waiting -> offline (no timer)
//   online event:  offline -> linked at once, delay back to backoff[0]; while the old
//                  socket still closes, linked -> (its close) -> linked again at once
//   a refusal for good (protocol "failed": reload, unauthorized, ...) or close():
//                  any -> stopped (no socket, no timer, for good)
//
// The session knows nothing of storage, tabs or rendering: what it learns goes to its
// owner's hooks (onEvents for every frame, onClosed after a socket closed, onStatus when
// only the status may have moved). Time and randomness are passed in, so a test drives
// the loop with a fake socket and a fake clock.

import { Link } from "./connection.js";
import { report } from "./observable.js";

/** @typedef {import("./protocol.js").ClientProtocol} ClientProtocol */
/** @typedef {import("./protocol.js").ClientEvent} ClientEvent */
/** @typedef {import("./connection.js").SocketLike} SocketLike */

/** @typedef {"connecting" | "live" | "offline"} Status */

/**
 * @typedef {object} Timers  how the session waits (the global timers by default)
 * @property {(run: () => void, ms: number) => unknown} setTimeout
 * @property {(handle: any) => void} clearTimeout
 */

/**
 * @typedef {object} SessionOptions
 * @property {() => SocketLike} openSocket  a new WebSocket to the sync endpoint
 * @property {[number, number]} [backoff]  first and longest reconnect wait, seconds
 * @property {boolean} [offline]  the browser says it is offline at the start
 * @property {() => Promise<unknown>} [settled]  resolves when every queued save is durable
 * @property {() => void} [persist]  queue a save of the pending queue if it changed
 * @property {(events: ClientEvent[]) => void} [onEvents]  after every frame received
 * @property {() => void} [onClosed]  after a socket closed (the status may have moved)
 * @property {() => void} [onStatus]  the status may have moved, nothing else did
 * @property {Timers} [timers]
 * @property {() => number} [random]  in [0, 1)
 */

export class Session {
  /**
   * @param {ClientProtocol} protocol
   * @param {SessionOptions} options
   */
  constructor(protocol, options) {
    this.protocol = protocol;
    this.options = options;
    this.timers = options.timers ?? {
      setTimeout: (run, ms) => setTimeout(run, ms),
      clearTimeout: (handle) => clearTimeout(handle),
    };
    this.random = options.random ?? Math.random;
    this.backoff = options.backoff ?? [0.25, 10];
    /** The next reconnect wait's upper bound, seconds. */
    this.delay = this.backoff[0];
    /** @type {Link | null} the socket being driven (until its close event) */
    this.link = null;
    /** @type {unknown} the pending reconnect timer */
    this._retryTimer = null;
    /** The browser says it is offline: no connection until it says online. */
    this.browserOffline = options.offline ?? false;
    /** Back online while the last socket was still closing: connect when it has. */
    this._connectOnClose = false;
    this.closed = false;
  }

  /**
   * What the page should show: offline, connecting (a socket, no welcome yet) or live.
   * @returns {Status}
   */
  get status() {
    if (this.browserOffline) return "offline";
    if (this.protocol.state === "live") return "live";
    if (this.link !== null && this.protocol.state !== "failed") return "connecting";
    return "offline";
  }

  /** A reconnect is scheduled. */
  get waiting() {
    return this._retryTimer !== null;
  }

  /** Open the first socket (unless offline: then the "online" event does). */
  start() {
    this._connect();
  }

  /** Send what the protocol has to send now (after a local write or subscribe). */
  flush() {
    void this.link?.flush();
  }

  _connect() {
    this._retryTimer = null;
    if (this.closed || this.protocol.state === "failed" || this.link !== null) return;
    if (this.browserOffline) return; // the "online" event connects
    let socket;
    try {
      socket = this.options.openSocket();
    } catch (exc) {
      report(exc);
      this._scheduleReconnect();
      return;
    }
    const link = new Link(this.protocol, socket, {
      settled: this.options.settled,
      persist: this.options.persist,
      onEvents: (events) => this.options.onEvents?.(events),
      onClose: ({ wentLive }) => this._closedLink(link, wentLive),
    });
    this.link = link;
    this.options.onStatus?.();
  }

  /** @param {Link} link @param {boolean} wentLive */
  _closedLink(link, wentLive) {
    if (this.link === link) this.link = null;
    this.options.onClosed?.();
    if (this.closed || this.protocol.state === "failed") return;
    if (wentLive) this.delay = this.backoff[0];
    if (this.browserOffline) return; // the "online" event reconnects
    if (this._connectOnClose) {
      // Back online while this socket was still closing: go on at once.
      this._connectOnClose = false;
      this._connect();
      return;
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this._retryTimer !== null || this.closed) return;
    // Equal jitter: half the delay, plus a random part of the other half.
    const wait = this.delay / 2 + (this.random() * this.delay) / 2;
    this.delay = Math.min(this.backoff[1], this.delay * 2);
    this._retryTimer = this.timers.setTimeout(() => this._connect(), wait * 1000);
  }

  _cancelRetry() {
    if (this._retryTimer !== null) this.timers.clearTimeout(this._retryTimer);
    this._retryTimer = null;
  }

  /** The browser is back online: connect at once (no backoff wait). */
  online() {
    if (this.closed) return;
    this.browserOffline = false;
    this.delay = this.backoff[0];
    this._cancelRetry();
    if (this.link === null) this._connect();
    else this._connectOnClose = true; // the old socket is still closing
    this.options.onStatus?.();
  }

  /**
   * The browser went offline. A socket may outlive that (Chromium keeps an open one
   * while offline), holding frames that cannot leave: close it and stop retrying until
   * the "online" event. The link stays until its close event (no second connection
   * meanwhile); the status says offline at once.
   */
  offline() {
    if (this.closed) return;
    this.browserOffline = true;
    this._connectOnClose = false;
    this._cancelRetry();
    this.link?.close(1000, "client: offline");
  }

  /** Stop for good: close the socket, cancel any reconnect. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this._cancelRetry();
    this.link?.close(1000, "client closed");
  }
}
