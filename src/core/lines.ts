/**
 * Reads a byte stream as lines (NDJSON taps, streams): calls `onLine` with each complete line,
 * without its "\n", as the bytes arrive. Stops early when `stop()` says so after a chunk. The last
 * line is passed only when the stream ended (a stream cut mid-line loses nothing it had).
 */
export async function forEachLine(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void, stop: () => boolean = () => false): Promise<void> {
  const reader = stream.getReader();
  const dec = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        buf += dec.decode();
        if (buf !== '') onLine(buf);
        return;
      }
      buf += dec.decode(value, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        onLine(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      if (stop()) return;
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}
