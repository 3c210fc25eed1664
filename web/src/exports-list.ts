/**
 * The live list of the project's exports: polls `batchExport.all` (every second while one is
 * queued or running, every few seconds otherwise) and updates each row in place, so a button
 * being clicked is never swapped out from under the pointer. Cancel and Download act on one row.
 */
import { describeError, isUnauthorized, type Client } from "./api.js";
import type { BatchExport } from "../../clients/ts/src/client.js";
import { tableLabel } from "./catalog.js";
import { formatBytes, formatCount, formatDateTime, fromNow } from "./format.js";

const ACTIVE_POLL_MS = 1000;
const IDLE_POLL_MS = 4000;
const FAILING_POLL_MS = 10000;
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

export class ExportsList {
  private rows = new Map<string, RowParts>();
  private timer: number | undefined;
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
    void this.refresh();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.timer);
  }

  /** Fetch now (after a create, a cancel), then keep polling. Resolves once the list is drawn. */
  async refresh(): Promise<void> {
    window.clearTimeout(this.timer);
    const sequence = ++this.sequence;
    let delay = FAILING_POLL_MS;
    try {
      const list = await this.client.batchExport.all({ projectId: this.projectId, limit: PAGE_SIZE });
      if (sequence !== this.sequence || this.stopped) return; // a newer refresh owns the list
      this.render(list.exports, list.totalCount);
      this.showError(null);
      const active = list.exports.some((e) => e.status === "QUEUED" || e.status === "PROCESSING");
      delay = active ? ACTIVE_POLL_MS : IDLE_POLL_MS;
    } catch (error) {
      if (sequence !== this.sequence || this.stopped) return;
      if (isUnauthorized(error)) {
        this.stop();
        this.onUnauthorized(describeError(error));
        return;
      }
      this.showError(`Could not load the exports. ${describeError(error)}`);
    }
    if (!this.stopped && sequence === this.sequence) this.timer = window.setTimeout(() => void this.refresh(), delay);
  }

  private showError(message: string | null): void {
    this.elements.error.textContent = message ?? "";
    this.elements.error.hidden = message === null;
  }

  private render(exports: BatchExport[], totalCount: number): void {
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
    const shown = exports.length < totalCount ? `the newest ${exports.length} of ${totalCount} exports` : `${totalCount} export${totalCount === 1 ? "" : "s"}`;
    this.elements.summary.textContent = `${shown} · updated ${new Date().toLocaleTimeString()}`;
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
    if (item.isExpired) parts.expires.textContent = "expired";
    else if (item.expiresAt) parts.expires.textContent = fromNow(item.expiresAt);
    else parts.expires.textContent = "—";
    parts.expires.title = item.expiresAt ? formatDateTime(item.expiresAt) : "";

    const active = item.status === "QUEUED" || item.status === "PROCESSING";
    parts.cancel.hidden = !active;
    parts.download.hidden = !item.isDownloadable;
  }

  private async cancel(parts: RowParts): Promise<void> {
    const item = parts.current;
    parts.cancel.disabled = true;
    try {
      const cancelled = await this.client.batchExport.cancel({ projectId: this.projectId, batchExportId: item.id });
      this.fill(parts, cancelled);
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
      this.stop();
      this.onUnauthorized(describeError(error));
    } else {
      this.showError(`${what} ${describeError(error)}`);
    }
  }
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
