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
 *
 * A parser made with `spans: false` reports no URL, status, header name or header value spans:
 * llhttp still checks every byte of the head, and the caller scans the head it validated once in
 * JS (response-head.ts `scanResponseHead`) instead of taking a call from WebAssembly per name and
 * per value (see `leanSettings`).
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
  __indirect_function_table: { get(i: number): { name: string } | null; readonly length: number };
  malloc(n: number): number;
  free(p: number): void;
  llhttp_alloc(type: number): number;
  llhttp_init(p: number, type: number, settings: number): void;
  llhttp_settings_init(settings: number): void;
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

interface WasmImport {
  readonly module: string;
  readonly name: string;
  readonly kind: string;
}
const WAImports = (globalThis as unknown as { WebAssembly: { Module: { imports(m: WasmModule): WasmImport[] } } }).WebAssembly.Module;

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

const wasmModule = loadModule();
const instance = new WA.Instance(wasmModule, {
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
  'malloc', 'free', 'llhttp_alloc', 'llhttp_init', 'llhttp_settings_init', 'llhttp_reset', 'llhttp_free', 'llhttp_execute', 'llhttp_finish', 'llhttp_resume', 'llhttp_get_error_pos',
  'llhttp_get_error_reason', 'llhttp_get_method', 'llhttp_get_http_major', 'llhttp_get_http_minor', 'llhttp_should_keep_alive', 'llhttp_message_needs_eof',
] as const satisfies ReadonlyArray<keyof LlhttpExports>;
const missing = LLHTTP_FUNCTIONS.filter((f) => typeof (ll as unknown as Record<string, unknown>)[f] !== 'function');
if (missing.length > 0) throw new Error(`the llhttp build in ${LLHTTP_DIR} lacks ${missing.join(', ')}: install the exact undici version package.json names (npm ci)`);

/** The span callbacks a parser made with `spans: false` goes without. */
const SPAN_IMPORTS = ['wasm_on_url', 'wasm_on_status', 'wasm_on_header_field', 'wasm_on_header_value'];

/**
 * llhttp reads its callbacks from a settings struct (a table of function pointers) that each
 * parser points to; undici's build points every parser at one struct with all of its callbacks.
 * Parsers without spans point at a copy of it without the span callbacks (llhttp skips a callback
 * that is null). Nothing of the layout is assumed: where the pointer sits in a parser is found by
 * `llhttp_init` with a marker, the struct's length by what `llhttp_settings_init` clears, and which
 * entries are the span callbacks by the functions they point to (a table entry's `name` is its
 * function's index, and the first indices are the imports, in order). Null when any of that is
 * not as expected: parsers then keep their spans (correct, only slower); llhttp.test.ts checks
 * that undici's pinned build gives the copy.
 */
function leanSettings(): { readonly at: number; readonly ptr: number } | null {
  try {
    const MARK = 0x5ce1_7a6b;
    const scratch = ll.malloc(256);
    new Uint8Array(ll.memory.buffer).fill(0, scratch, scratch + 256);
    ll.llhttp_init(scratch, ParserType.Response, MARK);
    let at = -1;
    for (let o = 0; o < 256; o += 4) if (new DataView(ll.memory.buffer).getUint32(scratch + o, true) === MARK) at = o;
    new Uint8Array(ll.memory.buffer).fill(0xff, scratch, scratch + 256);
    ll.llhttp_settings_init(scratch);
    let size = 0;
    const mem = new Uint8Array(ll.memory.buffer);
    while (size < 256 && mem[scratch + size] === 0) size++;
    ll.free(scratch);
    if (at < 0 || size === 0 || size % 4 !== 0 || size === 256) return null;
    const probe = ll.llhttp_alloc(ParserType.Response);
    const full = new DataView(ll.memory.buffer).getUint32(probe + at, true);
    ll.llhttp_free(probe);
    const imports = WAImports.imports(wasmModule).filter((i) => i.kind === 'function');
    const ptr = ll.malloc(size);
    new Uint8Array(ll.memory.buffer).copyWithin(ptr, full, full + size);
    const view = new DataView(ll.memory.buffer);
    let dropped = 0;
    for (let o = 0; o < size; o += 4) {
      const idx = view.getUint32(ptr + o, true);
      if (idx === 0) continue;
      const fn = ll.__indirect_function_table.get(idx);
      const imported = fn === null ? undefined : imports[Number(fn.name)];
      if (imported !== undefined && SPAN_IMPORTS.includes(imported.name)) {
        view.setUint32(ptr + o, 0, true);
        dropped++;
      }
    }
    if (dropped !== SPAN_IMPORTS.length) {
      ll.free(ptr);
      return null;
    }
    return { at, ptr };
  } catch {
    return null;
  }
}

const LEAN = leanSettings();

/** Whether parsers made with `spans: false` really go without span callbacks (llhttp.test.ts). */
export const LEAN_PARSERS: boolean = LEAN !== null;

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
    /** false: no URL, status, header name or value spans (see the top of this file). */
    spans = true,
  ) {
    this.ptr = ll.llhttp_alloc(type);
    if (!spans && LEAN !== null) new DataView(ll.memory.buffer).setUint32(this.ptr + LEAN.at, LEAN.ptr, true);
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
