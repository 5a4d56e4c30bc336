/**
 * A tunnel: after a 101 (Switching Protocols) answer to an Upgrade request (WebSocket), bytes
 * flow both ways as they are, with back-pressure each way, until either side closes. The mesh's
 * rules applied to the request that opened it; nothing inside is parsed.
 */
import type { Socket } from 'node:net';

/**
 * Back-pressure: a write to a full socket pauses the socket the bytes come from until the full
 * one drains (one 'drain' listener at a time). The paused socket is the one resumed, even if it
 * has moved on since (a pooled connection must not stay paused).
 */
export class Backpressure {
  private waiting = false;
  constructor(private readonly mayResume: () => boolean = () => true) {}

  /** Writes `data` to `to`; when its buffer is full, pauses `from` until it drains. */
  write(to: Socket, from: Socket, data: Buffer): void {
    if (!to.write(data)) this.hold(to, from);
  }

  hold(to: Socket, from: Socket): void {
    from.pause();
    if (this.waiting) return;
    this.waiting = true;
    to.once('drain', () => {
      this.waiting = false;
      if (this.mayResume()) from.resume();
    });
  }

  /** A wait is under way (the reader is paused). */
  get holding(): boolean {
    return this.waiting;
  }

  /** Forgets a wait on a connection that is gone (its 'drain' will never come). */
  cancel(): void {
    this.waiting = false;
  }
}

export class Tunnel {
  private readonly upward: Backpressure;
  private readonly downward: Backpressure;
  private closed = false;

  constructor(
    private readonly client: Socket,
    private readonly upstream: Socket,
    /** Counts the bytes sent to the client. */
    private readonly sent: (n: number) => void,
    /** The tunnel is over (either side closed). */
    private readonly onClosed: () => void,
  ) {
    this.upward = new Backpressure();
    this.downward = new Backpressure();
  }

  fromClient(data: Buffer): void {
    if (!this.closed) this.upward.write(this.upstream, this.client, data);
  }

  clientEnded(): void {
    this.upstream.end();
  }

  /** Bytes from the upstream; none: it ended its side. */
  fromUpstream(data: Buffer): void {
    if (data.length === 0) {
      this.client.end();
      return;
    }
    this.sent(data.length);
    this.downward.write(this.client, this.upstream, data);
  }

  /** The upstream connection is gone: let the client side finish what it has. */
  upstreamClosed(): void {
    this.close();
    this.client.end();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClosed();
  }
}
