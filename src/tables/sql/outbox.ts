/**
 * The outgoing side of a database connection's query path: the queries
 * sent on one connection in one run of JavaScript (pipelined lookups that
 * arrived together) leave in one write(2), as one TCP segment, at the end
 * of that run (a microtask), instead of one system call and one server
 * wake-up each. A query on an idle connection goes out at once (a lone
 * client's lookup does not wait for the microtask).
 */
export class Outbox {
  private parts: Buffer[] = [];

  constructor(private readonly stream: { write(b: Buffer): unknown }) {}

  /** `idle`: no query of this connection is in flight (nothing to catch up with: write now). */
  send(message: Buffer, idle: boolean): void {
    if (idle && this.parts.length === 0) {
      this.stream.write(message);
      return;
    }
    this.parts.push(message);
    if (this.parts.length === 1) queueMicrotask(this.flush);
  }

  private readonly flush = (): void => {
    const p = this.parts;
    this.parts = [];
    this.stream.write(p.length === 1 ? p[0]! : Buffer.concat(p));
  };
}
