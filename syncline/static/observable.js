// Tiny reactive values: `value.subscribe(fn)` calls fn with the current value at once and
// again after every change, until the function it returned is called. A listener that
// throws does not stop the others; its error is reported (reportError, or the console).

/**
 * @template T
 * @typedef {object} Observable
 * @property {T} value  the current value
 * @property {(listener: (value: T) => void) => () => void} subscribe  returns unsubscribe
 */

/**
 * @template T
 * @implements {Observable<T>}
 */
export class Value {
  /**
   * @param {T} initial
   * @param {object} [hooks]
   * @param {(a: T, b: T) => boolean} [hooks.equals]  skip a set() that changes nothing
   * @param {() => void} [hooks.start]  called when the first listener subscribes
   * @param {() => void} [hooks.stop]  called when the last listener leaves
   */
  constructor(initial, hooks = {}) {
    this._value = initial;
    this._equals = hooks.equals ?? Object.is;
    this._start = hooks.start;
    this._stop = hooks.stop;
    /** @type {Set<(value: T) => void>} */
    this._listeners = new Set();
  }

  get value() {
    return this._value;
  }

  /** @param {T} value */
  set(value) {
    if (this._equals(this._value, value)) return;
    this._value = value;
    for (const listener of [...this._listeners]) call(listener, value);
  }

  /**
   * @param {(value: T) => void} listener
   * @returns {() => void}
   */
  subscribe(listener) {
    // A distinct wrapper per subscription, so one function may subscribe twice.
    /** @param {T} v */
    const wrapped = (v) => listener(v);
    this._listeners.add(wrapped);
    if (this._listeners.size === 1 && this._start) this._start();
    call(wrapped, this._value);
    return () => {
      if (this._listeners.delete(wrapped) && this._listeners.size === 0 && this._stop) this._stop();
    };
  }

  /** Whether anyone listens. */
  get observed() {
    return this._listeners.size > 0;
  }
}

/**
 * A read-only face of a Value.
 * @template T
 * @param {Value<T>} source
 * @returns {Observable<T>}
 */
export function readonly(source) {
  return {
    get value() {
      return source.value;
    },
    subscribe: (listener) => source.subscribe(listener),
  };
}

/**
 * @template T
 * @param {(value: T) => void} listener
 * @param {T} value
 */
function call(listener, value) {
  try {
    listener(value);
  } catch (exc) {
    report(exc);
  }
}

/** Surface an error from application code without breaking the caller. @param {unknown} exc */
export function report(exc) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(exc);
  else console.error(exc);
}
