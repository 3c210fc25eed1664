/**
 * The scheduled-export form: a destination (S3 or Azure, with its secret), the tables, the file
 * format, the schedule and where the first window starts. It reads itself into the params of
 * `scheduledExport.create`, `update` and `validate`, and is filled back from a `ScheduledExport` to
 * edit one. The secret is write-only: never filled in, and left out of an update when left empty,
 * so the server keeps the stored one.
 */
import type {
  AzureDestination,
  CreateScheduledExport,
  S3Destination,
  ScheduledExport,
  StartFrom,
  UpdateScheduledExport,
  ValidationIssue,
} from "../../clients/ts/src/client.js";
import { tableLabel, type Catalog, type TableName } from "./catalog.js";

export type Destination = S3Destination | AzureDestination;
type ExportFormat = NonNullable<CreateScheduledExport["format"]>;
type Compression = NonNullable<CreateScheduledExport["compression"]>;
type Schedule = CreateScheduledExport["schedule"];
type StartMode = StartFrom["mode"];

const FORMATS: readonly ExportFormat[] = ["PARQUET", "CSV", "JSON", "JSONL"];
const COMPRESSIONS: readonly Compression[] = ["zstd", "gzip", "none"];
const SCHEDULES: readonly Schedule[] = ["every_20_minutes", "hourly", "daily", "weekly"];
const START_MODES: readonly StartMode[] = ["full_history", "from_today", "from_date"];
const STORED_SECRET = "stored — leave empty to keep";

/** Something the form can tell before asking the server (no table ticked, no date for from_date). */
export class ScheduledInputError extends Error {
  override readonly name = "ScheduledInputError";
}

function element<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`index.html has no #${id}`);
  return found as T;
}

function pick<T extends string>(value: string, allowed: readonly T[]): T {
  return allowed.find((a) => a === value) ?? allowed[0]!;
}

/** What the server picks for a left-out compression (schemas.batch_exports.default_compression). */
function defaultCompression(format: ExportFormat): Compression {
  return format === "PARQUET" ? "zstd" : "none";
}

/** A datetime-local value read as UTC, with its zone: "2026-01-02T03:04" → "2026-01-02T03:04:00Z". */
function utcFromInput(value: string): string {
  return `${value.length === 16 ? `${value}:00` : value}Z`;
}

/** An ISO time as the datetime-local input shows it, in UTC: "2026-01-02T03:04:05Z" → "2026-01-02T03:04:05". */
function inputFromUtc(iso: string): string {
  return new Date(iso).toISOString().slice(0, 19);
}

export class ScheduledForm {
  readonly form = element<HTMLFormElement>("scheduled-form");
  readonly validateButton = element<HTMLButtonElement>("scheduled-validate");
  readonly submitButton = element<HTMLButtonElement>("scheduled-submit");
  readonly cancelButton = element<HTMLButtonElement>("scheduled-cancel-edit");
  readonly error = element("scheduled-error");
  readonly status = element("scheduled-status");
  readonly validation = element("scheduled-validation");
  private readonly title = element("scheduled-form-title");
  private readonly name = element<HTMLInputElement>("scheduled-name");
  private readonly type = element<HTMLSelectElement>("scheduled-type");
  private readonly s3 = {
    fieldset: element<HTMLFieldSetElement>("scheduled-s3"),
    bucket: element<HTMLInputElement>("scheduled-s3-bucket"),
    prefix: element<HTMLInputElement>("scheduled-s3-prefix"),
    region: element<HTMLInputElement>("scheduled-s3-region"),
    endpoint: element<HTMLInputElement>("scheduled-s3-endpoint"),
    pathStyle: element<HTMLInputElement>("scheduled-s3-path-style"),
    accessKeyId: element<HTMLInputElement>("scheduled-s3-access-key-id"),
    secret: element<HTMLInputElement>("scheduled-s3-secret"),
  };
  private readonly azure = {
    fieldset: element<HTMLFieldSetElement>("scheduled-azure"),
    container: element<HTMLInputElement>("scheduled-azure-container"),
    prefix: element<HTMLInputElement>("scheduled-azure-prefix"),
    accountName: element<HTMLInputElement>("scheduled-azure-account"),
    accountKey: element<HTMLInputElement>("scheduled-azure-key"),
    endpoint: element<HTMLInputElement>("scheduled-azure-endpoint"),
  };
  private readonly tablesList = element("scheduled-tables-list");
  private readonly format = element<HTMLSelectElement>("scheduled-format");
  private readonly compression = element<HTMLSelectElement>("scheduled-compression");
  private readonly schedule = element<HTMLSelectElement>("scheduled-schedule");
  private readonly startDate = element<HTMLInputElement>("scheduled-start-date");
  private readonly enabled = element<HTMLInputElement>("scheduled-enabled");
  private tableBoxes: HTMLInputElement[] = [];
  private compressionPicked = false;
  /** The scheduled export being edited, as the server last sent it; null while creating one. */
  private editing: ScheduledExport | null = null;

  constructor(catalog: Catalog) {
    const schedulable = catalog.tables.filter((t) => t.schedulable);
    this.tablesList.replaceChildren(...schedulable.map((t) => this.tableItem(t.name)));
    this.type.addEventListener("change", () => this.showDestinationType());
    this.form.addEventListener("change", (event) => {
      if ((event.target as HTMLInputElement).name === "scheduledStart") this.startDate.disabled = this.startMode() !== "from_date";
    });
    // Until the user picks a compression it follows the format's default, as on the export form.
    this.compression.addEventListener("change", () => {
      this.compressionPicked = true;
    });
    this.format.addEventListener("change", () => {
      if (!this.compressionPicked) this.compression.value = defaultCompression(this.formatValue());
    });
    this.reset();
  }

  get editingId(): string | null {
    return this.editing?.id ?? null;
  }

  /** Back to a new scheduled export with the defaults (Parquet, zstd, hourly, the full history, enabled). */
  reset(): void {
    this.form.reset();
    this.editing = null;
    this.compressionPicked = false;
    this.title.textContent = "New scheduled export";
    this.submitButton.textContent = "Create scheduled export";
    this.cancelButton.hidden = true;
    for (const secret of [this.s3.secret, this.azure.accountKey]) secret.placeholder = "";
    for (const box of this.tableBoxes) box.checked = box.value === "traces";
    this.startDate.disabled = true;
    this.showDestinationType();
    this.showIssues([]);
    this.say(this.validation, null);
  }

  /** Fills the form with a stored scheduled export, its secret left empty (the server keeps it). */
  edit(item: ScheduledExport): void {
    this.reset();
    this.editing = item;
    this.title.textContent = `Edit “${item.name}”`;
    this.submitButton.textContent = "Save changes";
    this.cancelButton.hidden = false;
    this.name.value = item.name;
    const destination = item.destination;
    this.type.value = destination.type;
    if (destination.type === "s3") {
      this.s3.bucket.value = destination.bucket;
      this.s3.prefix.value = destination.prefix;
      this.s3.region.value = destination.region;
      this.s3.endpoint.value = destination.endpoint ?? "";
      this.s3.pathStyle.checked = destination.forcePathStyle;
      this.s3.accessKeyId.value = destination.accessKeyId;
      this.s3.secret.placeholder = destination.secretSet ? STORED_SECRET : "";
    } else {
      this.azure.container.value = destination.container;
      this.azure.prefix.value = destination.prefix;
      this.azure.accountName.value = destination.accountName;
      this.azure.endpoint.value = destination.endpoint ?? "";
      this.azure.accountKey.placeholder = destination.secretSet ? STORED_SECRET : "";
    }
    this.showDestinationType();
    for (const box of this.tableBoxes) box.checked = item.tables.includes(box.value as TableName);
    this.format.value = item.format;
    this.compression.value = item.compression;
    this.compressionPicked = true;
    this.schedule.value = item.schedule;
    this.setStart(item.startFrom.mode, item.startFrom.date ?? null);
    this.enabled.checked = item.enabled;
    this.form.scrollIntoView({ block: "nearest" });
    this.name.focus();
  }

  /** The secret inputs are emptied once their value has gone to the server: it stays nowhere on the page. */
  forgetSecrets(): void {
    this.s3.secret.value = "";
    this.azure.accountKey.value = "";
  }

  /** The destination as typed; its secret is left out where the input is empty. */
  destination(): Destination {
    const optional = (input: HTMLInputElement) => input.value.trim() || null;
    if (this.type.value === "azure") {
      const key = this.azure.accountKey.value;
      return {
        type: "azure",
        container: this.azure.container.value.trim(),
        prefix: this.azure.prefix.value.trim(),
        accountName: this.azure.accountName.value.trim(),
        endpoint: optional(this.azure.endpoint),
        ...(key ? { accountKey: key } : {}),
      };
    }
    const secret = this.s3.secret.value;
    return {
      type: "s3",
      bucket: this.s3.bucket.value.trim(),
      prefix: this.s3.prefix.value.trim(),
      region: this.s3.region.value.trim() || "us-east-1",
      endpoint: optional(this.s3.endpoint),
      forcePathStyle: this.s3.pathStyle.checked,
      accessKeyId: this.s3.accessKeyId.value.trim(),
      ...(secret ? { secretAccessKey: secret } : {}),
    };
  }

  /** Whether a secret is typed in for the destination shown. */
  hasSecret(): boolean {
    return (this.type.value === "azure" ? this.azure.accountKey : this.s3.secret).value !== "";
  }

  /** Whether the destination as typed is the stored one of the export being edited (its secret aside). */
  destinationUnchanged(): boolean {
    if (!this.editing) return false;
    const { secretSet: _secretSet, ...stored } = this.editing.destination;
    const typed: Record<string, unknown> = { ...this.destination() };
    delete typed.secretAccessKey;
    delete typed.accountKey;
    const storedFields: Record<string, unknown> = stored;
    return Object.keys({ ...typed, ...storedFields }).every((key) => (typed[key] ?? null) === (storedFields[key] ?? null));
  }

  createParams(projectId: string): CreateScheduledExport {
    return {
      projectId,
      name: this.name.value.trim(),
      destination: this.destination(),
      tables: this.tables(),
      format: this.formatValue(),
      compression: pick(this.compression.value, COMPRESSIONS),
      schedule: pick(this.schedule.value, SCHEDULES),
      startFrom: this.startFrom(),
      enabled: this.enabled.checked,
    };
  }

  /** Every field but the secret when it is left empty, and startFrom only when it was changed. */
  updateParams(projectId: string, scheduledExportId: string): UpdateScheduledExport {
    const { startFrom, ...params } = this.createParams(projectId);
    const before = this.editing?.startFrom;
    const same =
      before !== undefined &&
      before.mode === startFrom.mode &&
      (startFrom.date == null || (before.date != null && Date.parse(before.date) === Date.parse(startFrom.date)));
    return { ...params, scheduledExportId, ...(same ? {} : { startFrom }) };
  }

  /**
   * Marks the inputs that the server's issues name (`destination.s3.bucket` → Bucket) and says
   * what is wrong beside each; [] clears them.
   */
  showIssues(issues: ValidationIssue[]): void {
    for (const old of this.form.querySelectorAll(".field-error")) old.remove();
    for (const marked of this.form.querySelectorAll("[aria-invalid]")) marked.removeAttribute("aria-invalid");
    for (const issue of issues) {
      const field = this.fieldOf(issue.loc);
      if (!field) continue;
      field.setAttribute("aria-invalid", "true");
      const note = document.createElement("span");
      note.className = "field-error";
      note.textContent = issue.msg;
      const holder = field.closest("label, .field, fieldset");
      if (holder) holder.append(note);
      else field.after(note);
    }
  }

  say(target: HTMLElement, message: string | null, className?: string): void {
    target.textContent = message ?? "";
    target.hidden = message === null;
    if (className !== undefined) target.className = className;
  }

  private fieldOf(loc: (string | number)[]): HTMLElement | null {
    const names = loc.filter((part): part is string => typeof part === "string");
    // Destination issues name the field of the type shown; the rest are the form's own.
    const scope = names[0] === "destination" ? (this.type.value === "azure" ? this.azure.fieldset : this.s3.fieldset) : this.form;
    for (const name of [...names].reverse()) {
      const found = scope.querySelector<HTMLElement>(`[data-field="${CSS.escape(name)}"]`);
      if (found) return found;
    }
    return null;
  }

  private tableItem(name: TableName): HTMLLIElement {
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = name;
    this.tableBoxes.push(box);
    const label = document.createElement("label");
    label.append(box, ` ${tableLabel(name)}`);
    const item = document.createElement("li");
    item.append(label);
    return item;
  }

  private showDestinationType(): void {
    const azure = this.type.value === "azure";
    this.azure.fieldset.hidden = !azure;
    this.s3.fieldset.hidden = azure;
  }

  private tables(): TableName[] {
    const ticked = this.tableBoxes.filter((box) => box.checked).map((box) => box.value as TableName);
    if (ticked.length === 0) throw new ScheduledInputError("Choose at least one table to export.");
    return ticked;
  }

  private formatValue(): ExportFormat {
    return pick(this.format.value, FORMATS);
  }

  private startMode(): StartMode {
    const checked = this.form.querySelector<HTMLInputElement>("input[name=scheduledStart]:checked");
    return pick(checked?.value ?? "", START_MODES);
  }

  private setStart(mode: StartMode, date: string | null): void {
    for (const radio of this.form.querySelectorAll<HTMLInputElement>("input[name=scheduledStart]")) radio.checked = radio.value === mode;
    this.startDate.value = date ? inputFromUtc(date) : "";
    this.startDate.disabled = mode !== "from_date";
  }

  private startFrom(): StartFrom {
    const mode = this.startMode();
    if (mode !== "from_date") return { mode };
    if (!this.startDate.value) throw new ScheduledInputError("Enter the date and time (UTC) the first window starts at.");
    return { mode, date: utcFromInput(this.startDate.value) };
  }
}
