/**
 * The live list of the project's exports. It follows `batchExport.onChange` (server-sent events):
 * once the stream is open the list is read one time with `batchExport.all`, and from then on each
 * event updates its export's row in place (a button being clicked is never swapped out from under
 * the pointer) or adds a new export at the top. Only while the stream cannot open (the network, an
 * HTTP error, a browser or server that cannot stream) does the list poll `batchExport.all` (every
 * second while an export is queued or running, every few seconds otherwise); the client keeps trying
 * the stream, and the polling stops when it opens. Cancel and Download act on one row.
 */
import { describeError, isForbidden, isUnauthorized, type Client } from "./api.js";
import type { BatchExport, Unsubscribable } from "../../clients/ts/src/client.js";
import { tableLabel } from "./catalog.js";
import { formatBytes, formatCount, formatDateTime, fromNow } from "./format.js";

const ACTIVE_POLL_MS = 1000;
const IDLE_POLL_MS = 4000;
const FAILING_POLL_MS = 10000;
// Rows say "expires in 3 hours": redrawn now and then, as no event comes when time alone passes.
const CLOCK_MS = 30_000;
const PAGE_SIZE = 50;

interface RowParts {
  row: HTMLTableRowElement;
  name: HTMLElement;
  detail: HTMLElement;
  log: HTMLElement;
  status: HTMLElement;
  progress: HTMLProgressElement;
  progressText: HTMLElement;
  creator: HTMLElement;
  created: HTMLElement;
  expires: HTMLElement;
  cancel: HTMLButtonElement;
  download: HTMLButtonElement;
  current: BatchExport;
}

export interface ExportsListElements {
  body: HTMLTableSectionElement;
  empty: HTMLElement;
  summary: HTMLElement;
  error: HTMLElement;
}

/**
 * Where the list's news comes from: the stream (connecting; open, with the list still to read; live;
 * coming back after a drop), or polling.
 */
type Feed = "connecting" | "opened" | "live" | "reconnecting" | "polling";

export class ExportsList {
  private rows = new Map<string, RowParts>();
  /** The newest exports (at most a page of them), as the list read and the events since have them. */
  private exports = new Map<string, BatchExport>();
  private totalCount = 0;
  private listed = false;
  /** The events that arrived while a list read was on its way: applied again over its result. */
  private arrivedDuringRead: BatchExport[] | null = null;
  private feed: Feed = "connecting";
  private subscription: Unsubscribable | null = null;
  // The stream was refused for the role: once a poll shows the role may read again, follow it again.
  private followWhenAllowed = false;
  private polledAt: Date | null = null;
  private timer: number | undefined;
  private clock: number | undefined;
  private sequence = 0;
  private stopped = true;

  constructor(
    private readonly client: Client,
    private readonly projectId: string,
    private readonly elements: ExportsListElements,
    private readonly onUnauthorized: (message: string) => void,
  ) {}

  start(): void {
    this.stopped = false;
    this.follow();
    this.clock = window.setInterval(() => this.draw(), CLOCK_MS);
  }

  stop(): void {
    this.stopped = true;
    this.subscription?.unsubscribe();
    this.subscription = null;
    window.clearTimeout(this.timer);
    window.clearInterval(this.clock);
  }

  /** Reads the list now (after a create, a cancel); while polling, keeps polling. Resolves once it is drawn. */
  async refresh(): Promise<void> {
    window.clearTimeout(this.timer);
    const sequence = ++this.sequence;
    this.arrivedDuringRead = [];
    let next: number | null = FAILING_POLL_MS;
    try {
      const list = await this.client.batchExport.all({ projectId: this.projectId, limit: PAGE_SIZE });
      if (sequence !== this.sequence || this.stopped) return; // a newer read owns the list
      this.replaceWith(list.exports, list.totalCount, this.arrivedDuringRead ?? []);
      this.arrivedDuringRead = null;
      this.polledAt = new Date();
      if (this.feed === "opened") this.feed = "live"; // read since the stream opened: the events carry it on
      this.showError(null);
      this.draw();
      const active = list.exports.some((e) => e.status === "QUEUED" || e.status === "PROCESSING");
      next = this.feed === "polling" ? (active ? ACTIVE_POLL_MS : IDLE_POLL_MS) : null;
      if (this.followWhenAllowed) {
        this.followWhenAllowed = false;
        this.follow();
      }
    } catch (error) {
      if (sequence !== this.sequence || this.stopped) return;
      this.arrivedDuringRead = null;
      if (isUnauthorized(error)) return this.signedOut(error);
      this.showError(`Could not load the exports. ${describeError(error)}`);
    }
    if (next !== null && !this.stopped) this.timer = window.setTimeout(() => void this.refresh(), next);
  }

  private follow(): void {
    this.subscription?.unsubscribe();
    this.feed = "connecting";
    this.subscription = this.client.batchExport.onChange.subscribe(
      { projectId: this.projectId },
      {
        onStarted: ({ lastEventId }) => {
          window.clearTimeout(this.timer); // no more polling
          // A stream that resumed after an event replays what it missed; any other start needs a fresh read.
          if (lastEventId !== null && this.listed) {
            this.feed = "live";
            this.draw();
          } else {
            this.feed = "opened";
            void this.refresh();
          }
        },
        onData: (item) => this.receive(item),
        onConnectionStateChange: (state) => {
          if (state.state !== "reconnecting") return;
          // A stream that dropped (a server restarting) comes straight back, resuming where it was;
          // one that cannot open, or keeps dropping, leaves the list to polling meanwhile.
          if (state.reason === "dropped" && state.attempt === 1) {
            this.feed = "reconnecting";
            this.draw();
          } else {
            this.poll();
          }
        },
        onError: (error) => this.streamRefused(error),
      },
    );
  }

  /** The stream ended for good: signed out, or the list goes on without it, by polling. */
  private streamRefused(error: unknown): void {
    this.subscription = null;
    if (isUnauthorized(error)) return this.signedOut(error);
    if (isForbidden(error)) {
      this.showError(`Could not load the exports. ${describeError(error)}`);
      this.followWhenAllowed = true;
    }
    this.poll();
  }

  private poll(): void {
    if (this.feed === "polling") return;
    this.feed = "polling";
    void this.refresh();
  }

  private signedOut(error: unknown): void {
    this.stop();
    this.onUnauthorized(describeError(error));
  }

  private receive(item: BatchExport): void {
    this.arrivedDuringRead?.push(item);
    // Before the first list read, the read itself will have it.
    if (this.listed && this.merge(item)) this.draw();
  }

  private replaceWith(items: BatchExport[], totalCount: number, arrivedSince: BatchExport[]): void {
    this.exports = new Map(items.map((item) => [item.id, item]));
    this.totalCount = totalCount;
    this.listed = true;
    for (const item of arrivedSince) this.merge(item);
  }

  /** One export as an event (or a call's result) has it; whether the list changed. */
  private merge(item: BatchExport): boolean {
    const known = this.exports.get(item.id);
    if (known) {
      // The list read may be newer than an event that was on its way meanwhile.
      if (instant(item.updatedAt) < instant(known.updatedAt)) return false;
      this.exports.set(item.id, item);
      return true;
    }
    const shown = this.newestFirst();
    const oldest = shown[PAGE_SIZE - 1];
    if (oldest && newestFirst(item, oldest) > 0) return false; // older than the page reaches: not shown, not new
    this.exports.set(item.id, item);
    this.totalCount += 1;
    for (const beyond of this.newestFirst().slice(PAGE_SIZE)) this.exports.delete(beyond.id);
    return true;
  }

  private newestFirst(): BatchExport[] {
    return [...this.exports.values()].sort(newestFirst);
  }

  private showError(message: string | null): void {
    this.elements.error.textContent = message ?? "";
    this.elements.error.hidden = message === null;
  }

  private draw(): void {
    if (!this.listed) return;
    const exports = this.newestFirst().slice(0, PAGE_SIZE);
    const seen = new Set<string>();
    let previous: HTMLTableRowElement | null = null;
    for (const item of exports) {
      seen.add(item.id);
      const parts = this.rows.get(item.id) ?? this.createRow(item);
      this.fill(parts, item);
      // Newest first, as the server orders them; move a row only when it is out of place.
      const expected: ChildNode | null = previous ? previous.nextSibling : this.elements.body.firstChild;
      if (expected !== parts.row) this.elements.body.insertBefore(parts.row, expected);
      previous = parts.row;
    }
    for (const [id, parts] of this.rows) {
      if (!seen.has(id)) {
        parts.row.remove();
        this.rows.delete(id);
      }
    }
    this.elements.empty.hidden = exports.length > 0;
    const total = this.totalCount;
    const shown = exports.length < total ? `the newest ${exports.length} of ${total} exports` : `${total} export${total === 1 ? "" : "s"}`;
    this.elements.summary.textContent = `${shown} · ${this.freshness()}`;
    this.elements.summary.title =
      this.feed === "polling" ? "Live updates are unavailable: the list is read again every few seconds." : "Changes appear as they happen.";
  }

  private freshness(): string {
    switch (this.feed) {
      case "live":
        return "live";
      case "reconnecting":
        return "reconnecting…";
      case "connecting":
      case "opened":
        return "connecting…";
      case "polling":
        return `updated ${(this.polledAt ?? new Date()).toLocaleTimeString()}`;
    }
  }

  private createRow(item: BatchExport): RowParts {
    const row = document.createElement("tr");
    row.dataset.exportId = item.id;
    const cell = (...children: Node[]) => {
      const td = document.createElement("td");
      td.append(...children);
      row.append(td);
      return td;
    };
    const span = (className: string) => {
      const element = document.createElement("span");
      element.className = className;
      return element;
    };
    const name = span("export-name");
    const detail = span("export-detail");
    const log = span("export-log");
    cell(name, detail, log);
    const status = span("status");
    cell(status);
    const progress = document.createElement("progress");
    const progressText = span("progress-text");
    cell(progress, progressText).className = "progress-cell";
    const creator = span("creator");
    const created = span("created");
    cell(creator, created);
    const expires = span("expires");
    cell(expires);
    const cancel = button("Cancel", "secondary");
    const download = button("Download", "primary");
    cell(download, cancel).className = "actions";

    const parts: RowParts = { row, name, detail, log, status, progress, progressText, creator, created, expires, cancel, download, current: item };
    cancel.addEventListener("click", () => void this.cancel(parts));
    download.addEventListener("click", () => void this.download(parts));
    this.rows.set(item.id, parts);
    return parts;
  }

  private fill(parts: RowParts, item: BatchExport): void {
    parts.current = item;
    parts.row.dataset.status = item.status;
    parts.name.textContent = item.name;
    const kind = item.compression === "none" ? item.format : `${item.format}, ${item.compression}`;
    const size = item.fileBytes === null ? "" : ` · ${formatBytes(item.fileBytes)}`;
    parts.detail.textContent = `${tableLabel(item.query.tableName)} · ${kind}${size}${describeFilters(item)}`;
    parts.detail.title = item.sha256 ? `SHA-256 ${item.sha256}` : "";
    parts.log.textContent = item.log ?? "";
    parts.log.hidden = !item.log;
    parts.status.textContent = item.status.charAt(0) + item.status.slice(1).toLowerCase();
    parts.status.className = `status status-${item.status.toLowerCase()}`;

    const { rowsExported, rowsTotal } = item.progress;
    const finished = item.status === "COMPLETED";
    if (rowsTotal !== null && rowsTotal > 0) {
      parts.progress.max = rowsTotal;
      parts.progress.value = Math.min(rowsExported, rowsTotal);
    } else if (finished || rowsTotal === 0) {
      parts.progress.max = 1;
      parts.progress.value = finished ? 1 : 0;
    } else if (item.status === "PROCESSING") {
      parts.progress.removeAttribute("value"); // total not known yet: an indeterminate bar
    } else {
      parts.progress.max = 1;
      parts.progress.value = 0;
    }
    const rowsText = rowsTotal === null ? `${formatCount(rowsExported)} rows` : `${formatCount(rowsExported)} / ${formatCount(rowsTotal)} rows`;
    parts.progressText.textContent = rowsText + describeParts(item);

    parts.creator.textContent = item.user?.name ?? "someone no longer in this project";
    parts.created.textContent = formatDateTime(item.createdAt);
    parts.created.title = item.createdAt;
    // No event comes when a link's time simply runs out: the clock says so as well.
    const expired = item.isExpired || (item.expiresAt !== null && Date.parse(item.expiresAt) <= Date.now());
    if (expired) parts.expires.textContent = "expired";
    else if (item.expiresAt) parts.expires.textContent = fromNow(item.expiresAt);
    else parts.expires.textContent = "—";
    parts.expires.title = item.expiresAt ? formatDateTime(item.expiresAt) : "";

    const active = item.status === "QUEUED" || item.status === "PROCESSING";
    parts.cancel.hidden = !active;
    parts.download.hidden = !item.isDownloadable || expired;
  }

  private async cancel(parts: RowParts): Promise<void> {
    const item = parts.current;
    parts.cancel.disabled = true;
    try {
      const cancelled = await this.client.batchExport.cancel({ projectId: this.projectId, batchExportId: item.id });
      if (this.merge(cancelled)) this.draw();
      this.showError(null);
    } catch (error) {
      this.actionFailed(`Could not cancel “${item.name}”.`, error);
    } finally {
      parts.cancel.disabled = false;
    }
    await this.refresh();
  }

  private async download(parts: RowParts): Promise<void> {
    const item = parts.current;
    parts.download.disabled = true;
    try {
      // A fresh link on every click: links are valid for ten minutes.
      const link = await this.client.batchExport.downloadUrl({ projectId: this.projectId, batchExportId: item.id });
      const anchor = document.createElement("a");
      anchor.href = link.url;
      anchor.rel = "noopener";
      document.body.append(anchor);
      anchor.click(); // the file is sent as an attachment: the browser saves it and stays on the page
      anchor.remove();
      this.showError(null);
    } catch (error) {
      this.actionFailed(`Could not download “${item.name}”.`, error);
    } finally {
      parts.download.disabled = false;
    }
  }

  private actionFailed(what: string, error: unknown): void {
    if (isUnauthorized(error)) {
      this.signedOut(error);
    } else {
      this.showError(`${what} ${describeError(error)}`);
    }
  }
}

/** Newest first, as `batchExport.all` orders them: by createdAt, then id. */
function newestFirst(a: BatchExport, b: BatchExport): number {
  return instant(b.createdAt) - instant(a.createdAt) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
}

/** An ISO datetime in microseconds since the epoch: the server's timestamps are finer than Date's milliseconds. */
function instant(iso: string): number {
  const fraction = /\.(\d+)/.exec(iso)?.[1] ?? "";
  const seconds = Date.parse(iso.replace(/\.\d+/, ""));
  return seconds * 1000 + Number(fraction.padEnd(6, "0").slice(0, 6));
}

function button(text: string, className: string): HTMLButtonElement {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = text;
  return element;
}

/** " · 3 of 10 parts written" for an export written in parts by several workers; nothing for one part. */
function describeParts(item: BatchExport): string {
  const { partsDone, partsTotal } = item.progress;
  if (partsTotal <= 1) return "";
  return ` · ${formatCount(partsDone)} of ${formatCount(partsTotal)} parts written`;
}

function describeFilters(item: BatchExport): string {
  const filters = item.query.filter ?? [];
  if (filters.length === 0) return "";
  const parts = filters.map((f) => {
    const column = "key" in f && f.key ? `${f.column}.${f.key}` : f.column;
    if (f.type === "null") return `${column} ${f.operator}`;
    const value = Array.isArray(f.value) ? f.value.join(", ") : String(f.value);
    return `${column} ${f.operator} ${value}`;
  });
  return ` · ${parts.join("; ")}`;
}
