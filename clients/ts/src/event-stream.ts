/**
 * The bytes of a `text/event-stream` turned into events, exactly as the HTML standard's "interpreting
 * an event stream" says (https://html.spec.whatwg.org/multipage/server-sent-events.html), so the
 * client reads what any EventSource would: push each chunk as it arrives, however it is cut.
 *
 *   const parser = new EventStreamParser();
 *   for (const event of parser.push(chunk)) ...   // chunk: Uint8Array, split anywhere, even inside a character
 *   parser.end();                                   // the stream closed: an unfinished event is dropped
 *
 * UTF-8 is decoded as a stream (a leading BOM is dropped, bad bytes become U+FFFD); lines end with
 * CRLF, LF or CR, also when the CR ends one chunk and the LF starts the next; a line starting with
 * ":" is a comment; `field: value` loses one space after the colon; `data` lines join with "\n";
 * an `id` containing NUL is ignored; `retry` is taken only when it is all ASCII digits; a blank line
 * dispatches the event, unless it has no data.
 */

export interface StreamEvent {
  /** The `event` field, or "message" when there was none. */
  type: string;
  /** The `data` lines joined with "\n". */
  data: string;
  /** The last `id` the stream set, as of this event (it carries over to later events without an id); "" for none. */
  lastEventId: string;
}

const LF = 0x0a;
const CR = 0x0d;
const DIGITS = /^[0-9]+$/;

export class EventStreamParser {
  /** The stream's last event ID: what a reconnecting client sends as `Last-Event-ID`. */
  lastEventId: string;
  /** The reconnection time in milliseconds the stream asked for with `retry:`, if it did. */
  retry: number | null = null;
  /** Called with each comment line's text after the ":" (heartbeats, the server's "stream open"), as the
   * line is read: before `push` returns the events of the same chunk. */
  onComment: ((text: string) => void) | null = null;

  private readonly decoder = new TextDecoder("utf-8");
  private partialLine = "";
  // The previous chunk ended with CR: an LF starting the next one ends no second line.
  private afterCR = false;
  private data = "";
  private eventType = "";
  private idBuffer: string;
  private events: StreamEvent[] = [];

  /** `lastEventId`: where a reconnected stream resumes, so an event without an id line still carries it
   * (what browsers do: the id outlives the connection). */
  constructor(lastEventId = "") {
    this.lastEventId = lastEventId;
    this.idBuffer = lastEventId;
  }

  /** The events that `chunk` completes, in order. */
  push(chunk: Uint8Array): StreamEvent[] {
    this.feed(this.decoder.decode(chunk, { stream: true }));
    return this.take();
  }

  /** The stream has ended: what the decoder still held is read, and an event without its blank line is discarded. */
  end(): StreamEvent[] {
    this.feed(this.decoder.decode());
    const events = this.take();
    this.partialLine = "";
    this.data = "";
    this.eventType = "";
    return events;
  }

  private take(): StreamEvent[] {
    const events = this.events;
    this.events = [];
    return events;
  }

  private feed(text: string): void {
    let start = 0;
    if (this.afterCR && text.length > 0) {
      this.afterCR = false;
      if (text.charCodeAt(0) === LF) start = 1;
    }
    for (let i = start; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== LF && c !== CR) continue;
      const line = this.partialLine + text.slice(start, i);
      this.partialLine = "";
      if (c === CR) {
        if (i + 1 === text.length) this.afterCR = true;
        else if (text.charCodeAt(i + 1) === LF) i += 1;
      }
      start = i + 1;
      this.line(line);
    }
    this.partialLine += text.slice(start);
  }

  private line(line: string): void {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) {
      this.onComment?.(line.slice(1));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.data += value + "\n";
        break;
      case "id":
        if (!value.includes("\0")) this.idBuffer = value;
        break;
      case "retry":
        if (DIGITS.test(value)) this.retry = Number.parseInt(value, 10);
        break;
      default:
        break; // unknown fields are ignored
    }
  }

  private dispatch(): void {
    this.lastEventId = this.idBuffer;
    if (this.data === "") {
      this.eventType = "";
      return;
    }
    const data = this.data.endsWith("\n") ? this.data.slice(0, -1) : this.data;
    this.events.push({ type: this.eventType || "message", data, lastEventId: this.lastEventId });
    this.data = "";
    this.eventType = "";
  }
}
