/**
 * The project's scheduled exports, one row each, updated in place as `scheduledExport.all` is polled:
 * where each goes, what and when it exports, its state, how far it has exported and when it runs next.
 * Each row validates its stored destination, runs now, is enabled or disabled, edited, deleted, and
 * opens its runs (`scheduledExport.runs`), which are polled while one of them is queued or running.
 */
import { describeError, isForbidden, isUnauthorized, type Client } from "./api.js";
import type { ScheduledExport, ScheduledExportRun } from "../../clients/ts/src/client.js";
import { tableLabel } from "./catalog.js";
import { formatBytes, formatCount, formatDateTime, fromNow } from "./format.js";

const ACTIVE_POLL_MS = 2000;
const IDLE_POLL_MS = 15000;
const FAILING_POLL_MS = 10000;
const RUNS_SHOWN = 20;

const SCHEDULE_LABELS: Record<ScheduledExport["schedule"], string> = {
  every_20_minutes: "Every 20 minutes",
  hourly: "Hourly",
  daily: "Daily",
  weekly: "Weekly",
};
const FORMAT_LABELS: Record<ScheduledExport["format"], string> = { CSV: "CSV", JSON: "JSON", JSONL: "JSONL", PARQUET: "Parquet" };

interface RunsView {
  row: HTMLTableRowElement;
  table: HTMLTableElement;
  summary: HTMLElement;
  error: HTMLElement;
  body: HTMLTableSectionElement;
  timer: number | undefined;
  sequence: number;
  active: boolean;
}

interface RowParts {
  row: HTMLTableRowElement;
  name: HTMLElement;
  destination: HTMLElement;
  detail: HTMLElement;
  schedule: HTMLElement;
  state: HTMLElement;
  stateDetail: HTMLElement;
  lastSync: HTMLElement;
  nextSync: HTMLElement;
  message: HTMLElement;
  toggle: HTMLButtonElement;
  runsButton: HTMLButtonElement;
  runs: RunsView | null;
  current: ScheduledExport;
}

export interface ScheduledListElements {
  body: HTMLTableSectionElement;
  empty: HTMLElement;
  summary: HTMLElement;
  error: HTMLElement;
}

export interface ScheduledListEvents {
  /** The API said FORBIDDEN: this role may not see scheduled exports. */
  onForbidden: (message: string) => void;
  onUnauthorized: (message: string) => void;
  onEdit: (item: ScheduledExport) => void;
  onDeleted: (id: string) => void;
}

/** "s3://bucket/prefix", "azure://account/container/prefix": where the files go. */
export function destinationLabel(item: ScheduledExport): string {
  const d = item.destination;
  const path = d.type === "s3" ? `s3://${d.bucket}` : `azure://${d.accountName}/${d.container}`;
  return d.prefix ? `${path}/${d.prefix}` : path;
}

export class ScheduledList {
  private rows = new Map<string, RowParts>();
  private timer: number | undefined;
  private sequence = 0;
  private stopped = true;

  constructor(
    private readonly client: Client,
    private readonly projectId: string,
    private readonly elements: ScheduledListElements,
    private readonly events: ScheduledListEvents,
  ) {}

  start(): void {
    this.stopped = false;
    void this.refresh();
  }

  stop(): void {
    this.stopped = true;
    window.clearTimeout(this.timer);
    for (const parts of this.rows.values()) if (parts.runs) window.clearTimeout(parts.runs.timer);
  }

  /** Fetch now (after any action), then keep polling: often while a run is queued or running. */
  async refresh(): Promise<void> {
    window.clearTimeout(this.timer);
    const sequence = ++this.sequence;
    let delay = FAILING_POLL_MS;
    try {
      const list = await this.client.scheduledExport.all({ projectId: this.projectId });
      if (sequence !== this.sequence || this.stopped) return;
      this.render(list.scheduledExports);
      this.showError(null);
      delay = this.anyActive() ? ACTIVE_POLL_MS : IDLE_POLL_MS;
    } catch (error) {
      if (sequence !== this.sequence || this.stopped) return;
      if (this.refused(error)) return;
      this.showError(`Could not load the scheduled exports. ${describeError(error)}`);
    }
    if (!this.stopped && sequence === this.sequence) this.timer = window.setTimeout(() => void this.refresh(), delay);
  }

  /** A run in progress, or one queued or running in an open runs view. */
  private anyActive(): boolean {
    for (const parts of this.rows.values()) {
      if (parts.current.runStartedAt !== null || parts.runs?.active) return true;
    }
    return false;
  }

  /** FORBIDDEN and UNAUTHORIZED end the list: the section says why instead. */
  private refused(error: unknown): boolean {
    if (isUnauthorized(error)) {
      this.stop();
      this.events.onUnauthorized(describeError(error));
      return true;
    }
    if (isForbidden(error)) {
      this.stop();
      this.events.onForbidden(describeError(error));
      return true;
    }
    return false;
  }

  private showError(message: string | null): void {
    this.elements.error.textContent = message ?? "";
    this.elements.error.hidden = message === null;
  }

  private render(items: ScheduledExport[]): void {
    const seen = new Set<string>();
    let previous: HTMLTableRowElement | null = null;
    for (const item of items) {
      seen.add(item.id);
      const parts = this.rows.get(item.id) ?? this.createRow(item);
      this.fill(parts, item);
      // In the server's order; a row (and its runs under it) moves only when it is out of place.
      const expected: ChildNode | null = previous ? previous.nextSibling : this.elements.body.firstChild;
      if (expected !== parts.row) this.elements.body.insertBefore(parts.row, expected);
      previous = parts.row;
      if (parts.runs) {
        if (previous.nextSibling !== parts.runs.row) this.elements.body.insertBefore(parts.runs.row, previous.nextSibling);
        previous = parts.runs.row;
      }
    }
    for (const [id, parts] of this.rows) if (!seen.has(id)) this.removeRow(id, parts);
    this.elements.empty.hidden = items.length > 0;
    const count = `${items.length} scheduled export${items.length === 1 ? "" : "s"}`;
    this.elements.summary.textContent = `${count} · updated ${new Date().toLocaleTimeString()}`;
  }

  private removeRow(id: string, parts: RowParts): void {
    if (parts.runs) {
      window.clearTimeout(parts.runs.timer);
      parts.runs.row.remove();
    }
    parts.row.remove();
    this.rows.delete(id);
  }

  private createRow(item: ScheduledExport): RowParts {
    const row = document.createElement("tr");
    row.dataset.scheduledExportId = item.id;
    const cell = (...children: Node[]) => {
      const td = document.createElement("td");
      td.append(...children);
      row.append(td);
      return td;
    };
    const name = span("export-name");
    const destination = span("destination");
    const detail = span("export-detail");
    cell(name, destination, detail);
    const schedule = span("schedule");
    cell(schedule);
    const state = span("status");
    const stateDetail = span("state-detail");
    cell(state, stateDetail);
    const lastSync = span("last-sync");
    cell(lastSync);
    const nextSync = span("next-sync");
    cell(nextSync);
    const validate = button("Validate", "secondary small");
    const runNow = button("Run now", "secondary small");
    const toggle = button("Disable", "secondary small");
    const edit = button("Edit", "secondary small");
    const runsButton = button("Runs", "secondary small");
    const remove = button("Delete", "secondary small danger");
    runsButton.setAttribute("aria-expanded", "false");
    const message = span("row-message");
    message.setAttribute("role", "status");
    message.hidden = true;
    const tools = document.createElement("div");
    tools.className = "row-actions";
    tools.append(validate, runNow, toggle, edit, runsButton, remove);
    cell(tools, message).className = "actions scheduled-actions";

    const parts: RowParts = {
      row, name, destination, detail, schedule, state, stateDetail, lastSync, nextSync, message, toggle, runsButton,
      runs: null, current: item,
    };
    validate.addEventListener("click", () => void this.act(parts, validate, () => this.validate(parts)));
    runNow.addEventListener("click", () => void this.act(parts, runNow, () => this.runNow(parts)));
    toggle.addEventListener("click", () => void this.act(parts, toggle, () => this.toggle(parts)));
    remove.addEventListener("click", () => void this.act(parts, remove, () => this.remove(parts)));
    edit.addEventListener("click", () => this.events.onEdit(parts.current));
    runsButton.addEventListener("click", () => this.toggleRuns(parts));
    this.rows.set(item.id, parts);
    return parts;
  }

  private fill(parts: RowParts, item: ScheduledExport): void {
    parts.current = item;
    parts.name.textContent = item.name;
    parts.destination.textContent = destinationLabel(item);
    parts.destination.title = item.destination.endpoint ? `at ${item.destination.endpoint}` : "";
    const compression = item.compression === "none" ? "" : ` · ${item.compression}`;
    parts.detail.textContent = `${item.tables.map(tableLabel).join(", ")} · ${FORMAT_LABELS[item.format]}${compression}`;
    parts.schedule.textContent = SCHEDULE_LABELS[item.schedule];

    const state = !item.enabled ? "disabled" : item.lastError ? "failing" : "enabled";
    parts.row.dataset.state = state;
    parts.state.textContent = state.charAt(0).toUpperCase() + state.slice(1);
    parts.state.className = `status state-${state}`;
    const detail = !item.enabled ? item.disabledReason : item.lastError;
    const running = item.runStartedAt ? `A run is in progress since ${formatDateTime(item.runStartedAt)}.` : null;
    parts.stateDetail.textContent = [detail, running].filter(Boolean).join(" ");
    parts.stateDetail.hidden = !parts.stateDetail.textContent;

    parts.lastSync.textContent = item.lastSyncAt ? formatDateTime(item.lastSyncAt) : "nothing yet";
    parts.lastSync.title = item.lastSyncAt ?? "";
    if (item.nextSyncAt) {
      parts.nextSync.textContent = `${formatDateTime(item.nextSyncAt)} (${fromNow(item.nextSyncAt)})`;
    } else {
      parts.nextSync.textContent = item.enabled ? "once a window is due" : "—";
    }
    parts.nextSync.title = item.nextSyncAt ?? "";
    parts.toggle.textContent = item.enabled ? "Disable" : "Enable";
  }

  /** One action of a row: its button disabled meanwhile, what it said shown in the row, the list refreshed. */
  private async act(parts: RowParts, clicked: HTMLButtonElement, action: () => Promise<string | null>): Promise<void> {
    clicked.disabled = true;
    this.say(parts, null);
    try {
      const said = await action();
      if (said !== null) this.say(parts, said, "ok");
    } catch (error) {
      if (this.refused(error)) return;
      this.say(parts, `${clicked.textContent} failed. ${describeError(error)}`, "bad");
    } finally {
      clicked.disabled = false;
    }
    await this.refresh();
  }

  private say(parts: RowParts, message: string | null, tone?: "ok" | "bad"): void {
    parts.message.textContent = message ?? "";
    parts.message.hidden = message === null;
    parts.message.className = `row-message${tone ? ` message-${tone}` : ""}`;
  }

  private async validate(parts: RowParts): Promise<string | null> {
    const result = await this.client.scheduledExport.validate({ projectId: this.projectId, scheduledExportId: parts.current.id });
    this.say(parts, `${result.ok ? "Valid" : "Not valid"}: ${result.message}`, result.ok ? "ok" : "bad");
    return null;
  }

  private async runNow(parts: RowParts): Promise<string | null> {
    const run = await this.client.scheduledExport.runNow({ projectId: this.projectId, scheduledExportId: parts.current.id });
    // The runs view shows it go from queued to completed.
    if (parts.runs) void this.refreshRuns(parts);
    else this.toggleRuns(parts);
    return `Run ${run.status.toLowerCase()}: the rows ingested from ${formatDateTime(run.windowStart)} to ${formatDateTime(run.windowEnd)}.`;
  }

  private async toggle(parts: RowParts): Promise<string | null> {
    const enabled = !parts.current.enabled;
    const updated = await this.client.scheduledExport.update({ projectId: this.projectId, scheduledExportId: parts.current.id, enabled });
    this.fill(parts, updated);
    return enabled ? "Enabled: it runs on its schedule again." : "Disabled: it plans no more runs until it is enabled.";
  }

  private async remove(parts: RowParts): Promise<string | null> {
    const item = parts.current;
    const question = `Delete the scheduled export “${item.name}”? Its runs stop; the files already in ${destinationLabel(item)} stay there.`;
    if (!window.confirm(question)) return null;
    await this.client.scheduledExport.delete({ projectId: this.projectId, scheduledExportId: item.id });
    this.removeRow(item.id, parts);
    this.events.onDeleted(item.id);
    return null;
  }

  // --- the runs of one scheduled export -----------------------------------------------------------

  private toggleRuns(parts: RowParts): void {
    if (parts.runs) {
      window.clearTimeout(parts.runs.timer);
      parts.runs.row.remove();
      parts.runs = null;
      parts.runsButton.setAttribute("aria-expanded", "false");
      return;
    }
    const row = document.createElement("tr");
    row.className = "runs-row";
    row.dataset.runsOf = parts.current.id;
    const cell = document.createElement("td");
    cell.colSpan = 6;
    const summary = span("hint runs-summary");
    const error = document.createElement("p");
    error.className = "error";
    error.setAttribute("role", "alert");
    error.hidden = true;
    const table = document.createElement("table");
    table.className = "runs";
    const head = table.createTHead().insertRow();
    for (const title of ["Window", "Status", "Rows", "Tables", "Attempts", "Files"]) {
      const th = document.createElement("th");
      th.textContent = title;
      head.append(th);
    }
    const body = table.createTBody();
    cell.append(summary, error, table);
    row.append(cell);
    parts.row.after(row);
    parts.runs = { row, table, summary, error, body, timer: undefined, sequence: 0, active: false };
    parts.runsButton.setAttribute("aria-expanded", "true");
    void this.refreshRuns(parts);
  }

  private async refreshRuns(parts: RowParts): Promise<void> {
    const view = parts.runs;
    if (!view) return;
    window.clearTimeout(view.timer);
    const sequence = ++view.sequence;
    const wasActive = view.active;
    try {
      const list = await this.client.scheduledExport.runs({ projectId: this.projectId, scheduledExportId: parts.current.id, limit: RUNS_SHOWN });
      if (parts.runs !== view || sequence !== view.sequence || this.stopped) return;
      view.body.replaceChildren(...list.runs.map(runRow));
      view.error.hidden = true;
      const shown = list.runs.length < list.totalCount ? `The newest ${list.runs.length} of ${list.totalCount} runs` : `${list.totalCount} run${list.totalCount === 1 ? "" : "s"}`;
      view.summary.textContent = list.totalCount === 0 ? "No runs yet." : `${shown}, newest first.`;
      view.table.hidden = list.runs.length === 0;
      view.active = list.runs.some((r) => r.status === "QUEUED" || r.status === "PROCESSING");
      // A run that ended moved the schedule on (exported up to, next run, last error): show it.
      const lastSync = parts.current.lastSyncAt ? Date.parse(parts.current.lastSyncAt) : -Infinity;
      const behind = list.runs.some((r) => r.status === "COMPLETED" && Date.parse(r.windowEnd) > lastSync);
      if (behind || (wasActive && !view.active)) void this.refresh();
    } catch (error) {
      if (parts.runs !== view || sequence !== view.sequence || this.stopped) return;
      if (this.refused(error)) return;
      view.error.textContent = `Could not load the runs. ${describeError(error)}`;
      view.error.hidden = false;
    }
    if (view.active && !this.stopped) view.timer = window.setTimeout(() => void this.refreshRuns(parts), ACTIVE_POLL_MS);
  }
}

function runRow(run: ScheduledExportRun): HTMLTableRowElement {
  const row = document.createElement("tr");
  row.dataset.runId = run.id;
  row.dataset.status = run.status;
  const cell = (...children: (Node | string)[]) => {
    const td = document.createElement("td");
    td.append(...children);
    row.append(td);
    return td;
  };
  const when = span("run-window");
  when.textContent = `${formatDateTime(run.windowStart)} → ${formatDateTime(run.windowEnd)}`;
  when.title = `${run.windowStart} → ${run.windowEnd}`;
  cell(when);
  const status = span(`status status-${run.status.toLowerCase()}`);
  status.textContent = run.status.charAt(0) + run.status.slice(1).toLowerCase();
  const statusCell = cell(status);
  if (run.error) {
    const error = span("run-error");
    error.textContent = run.error;
    statusCell.append(error);
  }
  cell(formatCount(run.rowsExported)).className = "run-rows";
  cell(`${run.tablesDone} / ${run.tablesTotal}`).className = "run-tables";
  cell(String(run.attempts)).className = "run-attempts";
  const files = document.createElement("ul");
  files.className = "run-files";
  for (const file of run.files) {
    const item = document.createElement("li");
    const key = document.createElement("code");
    key.textContent = file.key;
    item.append(key, ` · ${formatCount(file.rows)} rows · ${formatBytes(file.bytes)}`);
    item.title = `sha256 ${file.sha256}`;
    files.append(item);
  }
  cell(files);
  return row;
}

function span(className: string): HTMLSpanElement {
  const element = document.createElement("span");
  element.className = className;
  return element;
}

function button(text: string, className: string): HTMLButtonElement {
  const element = document.createElement("button");
  element.type = "button";
  element.className = className;
  element.textContent = text;
  return element;
}
