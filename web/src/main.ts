/**
 * The exports page: sign in with a session token, create an export of a table with filters and a
 * choice of columns, in a text format or Parquet, and follow the project's exports until their
 * files can be downloaded; owners and admins also schedule exports into their own bucket
 * (scheduled-section.ts). Every call goes through the generated client (api.ts); every error the
 * API reports is shown in words where it happened.
 */
import { apiClient, describeError, isUnauthorized, RpcError } from "./api.js";
import type { CreateBatchExport } from "../../clients/ts/src/client.js";
import { loadCatalog, tableLabel, type Catalog, type TableInfo } from "./catalog.js";
import { ColumnInputError, ColumnPicker } from "./column-picker.js";
import { ExportsList } from "./exports-list.js";
import { FilterBuilder, FilterInputError } from "./filter-builder.js";
import { ScheduledSection } from "./scheduled-section.js";
import { forgetToken, saveSession, storedSession, takeLinkCredentials, type Session } from "./session.js";

function element<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`index.html has no #${id}`);
  return found as T;
}

const ui = {
  signIn: element<HTMLFormElement>("sign-in"),
  token: element<HTMLInputElement>("sign-in-token"),
  project: element<HTMLInputElement>("sign-in-project"),
  signInButton: element<HTMLButtonElement>("sign-in-submit"),
  signInError: element("sign-in-error"),
  app: element("app"),
  account: element("account"),
  projectName: element("account-project"),
  signOut: element<HTMLButtonElement>("sign-out"),
  create: element<HTMLFormElement>("create"),
  name: element<HTMLInputElement>("create-name"),
  table: element<HTMLSelectElement>("create-table"),
  filters: element("create-filters"),
  addFilter: element<HTMLButtonElement>("add-filter"),
  columns: element("create-columns-list"),
  allColumns: element<HTMLButtonElement>("columns-all"),
  noColumns: element<HTMLButtonElement>("columns-none"),
  columnsSummary: element("columns-summary"),
  orderColumn: element<HTMLSelectElement>("create-order-column"),
  orderDirection: element<HTMLSelectElement>("create-order-direction"),
  format: element<HTMLFieldSetElement>("create-format"),
  compression: element<HTMLFieldSetElement>("create-compression"),
  createButton: element<HTMLButtonElement>("create-submit"),
  createError: element("create-error"),
  createStatus: element("create-status"),
  listBody: element<HTMLTableSectionElement>("exports-body"),
  listEmpty: element("exports-empty"),
  listSummary: element("exports-summary"),
  listError: element("exports-error"),
};

type ExportFormat = CreateBatchExport["format"];
type Compression = NonNullable<CreateBatchExport["compression"]>;

const FORMATS: readonly ExportFormat[] = ["CSV", "JSON", "JSONL", "PARQUET"];
const COMPRESSIONS: readonly Compression[] = ["none", "gzip", "zstd"];

let session: Session | null = null;
let list: ExportsList | null = null;
let scheduled: ScheduledSection | null = null;
const client = apiClient(() => session?.token ?? null);

function say(target: HTMLElement, message: string | null): void {
  target.textContent = message ?? "";
  target.hidden = message === null;
}

function showSignIn(error: string | null): void {
  list?.stop();
  list = null;
  scheduled?.stop();
  session = null;
  ui.app.hidden = true;
  ui.account.hidden = true;
  ui.signIn.hidden = false;
  ui.project.value = storedSession().projectId ?? ui.project.value;
  say(ui.signInError, error);
  (ui.project.value ? ui.token : ui.project).focus();
}

/** Checks the token with a first `batchExport.all`; only an unknown token keeps the user out. */
async function signIn(candidate: Session): Promise<void> {
  say(ui.signInError, null);
  ui.signInButton.disabled = true;
  session = candidate;
  try {
    await client.batchExport.all({ projectId: candidate.projectId, limit: 1 });
  } catch (error) {
    // FORBIDDEN (a role without read access) still signs in: the list says why it is empty.
    if (isUnauthorized(error) || !(error instanceof RpcError)) {
      forgetToken();
      showSignIn(`Sign-in failed. ${describeError(error)}`);
      ui.signInButton.disabled = false;
      return;
    }
  }
  ui.signInButton.disabled = false;
  saveSession(candidate);
  ui.signIn.hidden = true;
  ui.app.hidden = false;
  ui.account.hidden = false;
  ui.projectName.textContent = candidate.projectId;
  ui.token.value = "";
  list = new ExportsList(
    client,
    candidate.projectId,
    { body: ui.listBody, empty: ui.listEmpty, summary: ui.listSummary, error: ui.listError },
    (message) => {
      forgetToken();
      showSignIn(`Signed out. ${message}`);
    },
  );
  ui.listBody.replaceChildren();
  list.start();
  scheduled?.start(candidate.projectId, (message) => {
    forgetToken();
    showSignIn(`Signed out. ${message}`);
  });
}

function fillOrder(table: TableInfo): void {
  const byDefault = `${table.defaultOrder.column}, ${table.defaultOrder.order === "DESC" ? "newest first" : "oldest first"}`;
  ui.orderColumn.replaceChildren(new Option(`Default (${byDefault})`, ""), ...table.sortColumns.map((c) => new Option(c, c)));
  ui.orderDirection.disabled = true;
}

/** The radio group's value, when it is one of `allowed`; else the first of them. */
function chosen<T extends string>(form: FormData, name: string, allowed: readonly T[]): T {
  const value = form.get(name);
  return allowed.find((a) => a === value) ?? allowed[0]!;
}

/** What the server would pick for a left-out compression (schemas.batch_exports.default_compression). */
function defaultCompression(format: ExportFormat): Compression {
  return format === "PARQUET" ? "zstd" : "none";
}

/**
 * Until the user picks a compression, it follows the format's default, so a Parquet file gets zstd
 * columns without a second click; once picked, it is theirs. A script's `checked = true` fires no
 * `change`, so only the user's own picks count.
 */
function followFormatWithCompression(): void {
  let picked = false;
  ui.compression.addEventListener("change", () => {
    picked = true;
  });
  ui.format.addEventListener("change", () => {
    if (picked) return;
    const radios = ui.create.elements.namedItem("compression") as RadioNodeList;
    radios.value = defaultCompression(chosen(new FormData(ui.create), "format", FORMATS));
  });
}

function setUpCreateForm(catalog: Catalog): void {
  const builder = new FilterBuilder(catalog, ui.filters, ui.addFilter);
  const picker = new ColumnPicker({ list: ui.columns, all: ui.allColumns, none: ui.noColumns, summary: ui.columnsSummary });
  const tableNamed = (name: string) => catalog.tables.find((t) => t.name === name) ?? catalog.tables[0]!;
  ui.table.replaceChildren(...catalog.tables.map((t) => new Option(tableLabel(t.name), t.name)));
  const chooseTable = () => {
    const table = tableNamed(ui.table.value);
    builder.setTable(table);
    picker.setTable(table);
    fillOrder(table);
  };
  ui.table.addEventListener("change", chooseTable);
  ui.orderColumn.addEventListener("change", () => {
    ui.orderDirection.disabled = ui.orderColumn.value === "";
  });
  chooseTable();
  followFormatWithCompression();

  ui.create.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!session) return;
    say(ui.createError, null);
    say(ui.createStatus, null);
    const form = new FormData(ui.create);
    let params: CreateBatchExport;
    try {
      params = {
        projectId: session.projectId,
        name: ui.name.value.trim(),
        format: chosen(form, "format", FORMATS),
        // Sent even where it is the format's default: the export is what the radios show.
        compression: chosen(form, "compression", COMPRESSIONS),
        query: {
          tableName: tableNamed(ui.table.value).name,
          filter: builder.filters(),
          orderBy: ui.orderColumn.value
            ? { column: ui.orderColumn.value, order: ui.orderDirection.value === "ASC" ? "ASC" : "DESC" }
            : null,
        },
        // After the filters: a form's mistakes are named in the order they appear on it.
        columns: picker.columns(),
      };
    } catch (error) {
      if (error instanceof FilterInputError || error instanceof ColumnInputError) return say(ui.createError, error.message);
      throw error;
    }
    ui.createButton.disabled = true;
    try {
      const created = await client.batchExport.create(params);
      say(ui.createStatus, `Created “${created.name}”: it is queued and will appear below.`);
      await list?.refresh();
    } catch (error) {
      if (isUnauthorized(error)) {
        forgetToken();
        showSignIn(`Signed out. ${describeError(error)}`);
      } else {
        say(ui.createError, `Could not create the export. ${describeError(error)}`);
      }
    } finally {
      ui.createButton.disabled = false;
    }
  });
}

async function main(): Promise<void> {
  const fromLink = takeLinkCredentials();
  const known = { ...storedSession(), ...fromLink };
  if (known.projectId) ui.project.value = known.projectId;

  ui.signIn.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = ui.token.value.trim();
    const projectId = ui.project.value.trim();
    if (!token || !projectId) return say(ui.signInError, "Enter both the session token and the project id.");
    void signIn({ token, projectId });
  });
  ui.signOut.addEventListener("click", () => {
    forgetToken();
    showSignIn(null);
  });

  try {
    const catalog = await loadCatalog();
    setUpCreateForm(catalog);
    scheduled = new ScheduledSection(client, catalog);
  } catch (error) {
    say(ui.createError, describeError(error));
    ui.createButton.disabled = true;
  }

  if (known.token && known.projectId) await signIn({ token: known.token, projectId: known.projectId });
  else showSignIn(null);
}

void main();
