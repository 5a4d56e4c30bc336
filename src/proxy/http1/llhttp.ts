/**
 * llhttp, the HTTP/1.1 parser of Node and undici, as the WebAssembly build that undici ships
 * (pinned by our package-lock). The proxy uses it for framing only: where a head ends, where a
 * body ends, whether the message is well-formed. It never builds header objects: the callbacks
 * report byte offsets into the chunk being parsed, and the proxy forwards the raw bytes.
 *
 * Strict by default: no leniency flag is set, so llhttp refuses what request smuggling is made of
 * (Content-Length with Transfer-Encoding, duplicate or malformed Content-Length, Transfer-Encoding
 * other than a final "chunked", bare LF line endings, obs-fold, invalid chunk sizes, NULs and
 * other invalid characters in header names and values).
 *
 * One WebAssembly instance serves every parser of the process: execution is synchronous, so a
 * module-level "current parser" routes the callbacks, and one input buffer inside the wasm
 * memory is reused for every chunk.

 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);

/** The part of the WebAssembly API used here (@types/node 20 does not declare it). */
interface WasmModule {
  readonly __brand: 'module';
}
interface WasmMemory {
  readonly buffer: ArrayBuffer;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (m: WasmModule, imports: Record<string, Record<string, unknown>>) => { readonly exports: unknown };
}
const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** llhttp's error numbers that the proxy looks at (the full table is in undici's constants). */
export const ERR = Object.freeze({
  OK: 0,
  INTERNAL: 1,
  STRICT: 2,
  LF_EXPECTED: 3,
  UNEXPECTED_CONTENT_LENGTH: 4,
  CLOSED_CONNECTION: 5,
  INVALID_METHOD: 6,
  INVALID_URL: 7,
  INVALID_CONSTANT: 8,
  INVALID_VERSION: 9,
  INVALID_HEADER_TOKEN: 10,
  INVALID_CONTENT_LENGTH: 11,
  INVALID_CHUNK_SIZE: 12,
  INVALID_STATUS: 13,
  INVALID_EOF_STATE: 14,
  INVALID_TRANSFER_ENCODING: 15,
  PAUSED: 21,
  PAUSED_UPGRADE: 22,
  USER: 24,
  CR_EXPECTED: 25,
});

export const enum ParserType {
  Request = 1,
  Response = 2,
}

/** What a parser reports; offsets are into the chunk given to `execute`. */
export interface ParserCallbacks {
  onMessageBegin(): number;
  onUrl(start: number, end: number): number;
  onHeaderField(start: number, end: number): number;
  onHeaderValue(start: number, end: number): number;
  /**
   * Return 0 to go on, 1 for "this message has no body" (a response to HEAD), ERR.PAUSED to
   * stop `execute` here.
   */
  onHeadersComplete(statusCode: number, upgrade: boolean, keepAlive: boolean): number;
  onBody(start: number, end: number): number;
  /** Return ERR.PAUSED to stop `execute` right after the message. */
  onMessageComplete(): number;
}

interface LlhttpExports {
  memory: WasmMemory;
  malloc(n: number): number;
  free(p: number): void;
  llhttp_alloc(type: number): number;
  llhttp_reset(p: number): void;
  llhttp_free(p: number): void;
  llhttp_execute(p: number, data: number, len: number): number;
  llhttp_finish(p: number): number;
  llhttp_resume(p: number): void;
  llhttp_get_error_pos(p: number): number;
  llhttp_get_error_reason(p: number): number;
  llhttp_get_method(p: number): number;
  llhttp_get_http_major(p: number): number;
  llhttp_get_http_minor(p: number): number;
  llhttp_should_keep_alive(p: number): number;
  llhttp_message_needs_eof(p: number): number;
}

let current: HttpParser | null = null;
let memView = new Uint8Array(0);
let inPtr = 0;
let inSize = 0;

function dispatchSpan(kind: 0 | 1 | 2 | 3, at: number, len: number): number {
  const p = current;
  if (p === null) return 0;
  const start = at - inPtr;
  const cb = p.callbacks;
  switch (kind) {
    case 0:
      return cb.onUrl(start, start + len);
    case 1:
      return cb.onHeaderField(start, start + len);
    case 2:
      return cb.onHeaderValue(start, start + len);
    default:
      return cb.onBody(start, start + len);
  }
}

/**
 * Where the WebAssembly build is: undici's `lib/llhttp/`, which is not a public export of undici,
 * so package.json pins undici to one exact version and llhttp.test.ts checks that the installed
 * one is it and that its build exports every function used here. Any other layout stops the
 * proxy at start-up with a sentence that says so, never later inside a request.
 */
export const LLHTTP_DIR = join(dirname(require.resolve('undici')), 'lib', 'llhttp');

function loadModule(): WasmModule {
  try {
    return new WA.Module(require(join(LLHTTP_DIR, 'llhttp_simd-wasm.js')) as Buffer);
  } catch {
    try {
      return new WA.Module(require(join(LLHTTP_DIR, 'llhttp-wasm.js')) as Buffer);
    } catch (e) {
      throw new Error(`the proxy's HTTP parser (llhttp, as built by undici) was not found in ${LLHTTP_DIR}: install the exact undici version package.json names (npm ci): ${(e as Error).message}`, { cause: e });
    }
  }
}

const instance = new WA.Instance(loadModule(), {
  env: {
    wasm_on_message_begin: () => (current === null ? 0 : current.callbacks.onMessageBegin()),
    wasm_on_url: (_p: number, at: number, len: number) => dispatchSpan(0, at, len),
    wasm_on_status: () => 0,
    wasm_on_header_field: (_p: number, at: number, len: number) => dispatchSpan(1, at, len),
    wasm_on_header_value: (_p: number, at: number, len: number) => dispatchSpan(2, at, len),
    wasm_on_headers_complete: (_p: number, status: number, upgrade: number, keepAlive: number) =>
      current === null ? 0 : current.callbacks.onHeadersComplete(status, upgrade === 1, keepAlive === 1),
    wasm_on_body: (_p: number, at: number, len: number) => dispatchSpan(3, at, len),
    wasm_on_message_complete: () => (current === null ? 0 : current.callbacks.onMessageComplete()),
  },
});
const ll = instance.exports as unknown as LlhttpExports;

/** The functions of the build that this file calls (llhttp.test.ts checks each is there). */
export const LLHTTP_FUNCTIONS = [
  'malloc', 'free', 'llhttp_alloc', 'llhttp_reset', 'llhttp_free', 'llhttp_execute', 'llhttp_finish', 'llhttp_resume', 'llhttp_get_error_pos',
  'llhttp_get_error_reason', 'llhttp_get_method', 'llhttp_get_http_major', 'llhttp_get_http_minor', 'llhttp_should_keep_alive', 'llhttp_message_needs_eof',
] as const satisfies ReadonlyArray<keyof LlhttpExports>;
const missing = LLHTTP_FUNCTIONS.filter((f) => typeof (ll as unknown as Record<string, unknown>)[f] !== 'function');
if (missing.length > 0) throw new Error(`the llhttp build in ${LLHTTP_DIR} lacks ${missing.join(', ')}: install the exact undici version package.json names (npm ci)`);


function cString(ptr: number): string {
  if (ptr === 0) return '';
  const mem = new Uint8Array(ll.memory.buffer);
  let end = ptr;
  while (end < mem.length && mem[end] !== 0) end++;
  return Buffer.from(mem.buffer, ptr, end - ptr).toString('latin1');
}

/** Method numbers of llhttp that the proxy treats specially. */
export const METHOD_HEAD = 2;
export const METHOD_CONNECT = 5;

export class HttpParser {
  private ptr: number;
  /** After an `execute` that stopped early (pause or error): the offset in the chunk where. */
  errorOffset = 0;

  constructor(
    readonly type: ParserType,
    readonly callbacks: ParserCallbacks,
  ) {
    this.ptr = ll.llhttp_alloc(type);
  }

  /**
   * Parses `chunk` (callbacks fire synchronously, with offsets into it) and returns llhttp's
   * error number: OK when all of it was consumed, PAUSED / PAUSED_UPGRADE when a callback
   * paused (errorOffset tells where), anything else is malformed input (see `reason`).
   */
  execute(chunk: Buffer): number {
    const len = chunk.length;
    if (len > inSize) {
      if (inPtr !== 0) ll.free(inPtr);
      inSize = Math.max(len, 16 * 1024);
      inPtr = ll.malloc(inSize);
    }
    // A view of the whole memory, made again only when the memory grew (growing detaches the
    // old buffer, whose views then have length 0).
    if (memView.byteLength === 0) memView = new Uint8Array(ll.memory.buffer);
    memView.set(chunk, inPtr);
    const prev = current;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- routes the wasm callbacks to this parser
    current = this;
    let ret: number;
    try {
      ret = ll.llhttp_execute(this.ptr, inPtr, len);
    } finally {
      current = prev;
    }
    if (ret !== ERR.OK) {
      const pos = ll.llhttp_get_error_pos(this.ptr);
      this.errorOffset = pos >= inPtr && pos <= inPtr + len ? pos - inPtr : len;
    }
    return ret;
  }

  /** Tells the parser the stream ended; an error number for a message cut short. */
  finish(): number {
    const prev = current;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- routes the wasm callbacks to this parser
    current = this;
    try {
      return ll.llhttp_finish(this.ptr);
    } finally {
      current = prev;
    }
  }

  resume(): void {
    ll.llhttp_resume(this.ptr);
  }

  /**
   * Back to the start of a message, as after one that ended on a keep-alive connection (the type
   * and the callbacks are kept; the last message's version, flags and any pause or error are not).
   */
  reset(): void {
    ll.llhttp_reset(this.ptr);
  }

  /** llhttp's words for the last error. */
  reason(): string {
    return cString(ll.llhttp_get_error_reason(this.ptr));
  }

  get method(): number {
    return ll.llhttp_get_method(this.ptr);
  }

  get httpMajor(): number {
    return ll.llhttp_get_http_major(this.ptr);
  }

  get httpMinor(): number {
    return ll.llhttp_get_http_minor(this.ptr);
  }

  /** Whether the connection may carry another message after this one (version and Connection). */
  get keepAlive(): boolean {
    return ll.llhttp_should_keep_alive(this.ptr) === 1;
  }

  /** A response whose body runs until the connection closes (no length, not chunked). */
  get needsEof(): boolean {
    return ll.llhttp_message_needs_eof(this.ptr) === 1;
  }

  destroy(): void {
    if (this.ptr !== 0) {
      ll.llhttp_free(this.ptr);
      this.ptr = 0;
    }
  }
}
