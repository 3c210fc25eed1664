/**
 * The "Scheduled exports" section: the list and the form together, for OWNER and ADMIN (scope
 * `integrations:CRUD`). A role without it is told so in one sentence, with neither list nor form.
 */
import { describeError, isForbidden, isUnauthorized, RpcError, type Client } from "./api.js";
import type { ValidateDestination } from "../../clients/ts/src/client.js";
import type { Catalog } from "./catalog.js";
import { ScheduledForm, ScheduledInputError } from "./scheduled-form.js";
import { ScheduledList } from "./scheduled-list.js";

export const NEEDS_ADMIN = "Scheduled exports need an owner or admin role in this project.";

function element<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`index.html has no #${id}`);
  return found as T;
}

export class ScheduledSection {
  private readonly content = element("scheduled-content");
  private readonly notice = element("scheduled-notice");
  private readonly listElements = {
    body: element<HTMLTableSectionElement>("scheduled-body"),
    empty: element("scheduled-empty"),
    summary: element("scheduled-summary"),
    error: element("scheduled-list-error"),
  };
  private readonly form: ScheduledForm;
  private list: ScheduledList | null = null;
  private projectId: string | null = null;
  private onUnauthorized: (message: string) => void = () => {};

  constructor(
    private readonly client: Client,
    catalog: Catalog,
  ) {
    this.form = new ScheduledForm(catalog);
    this.form.form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.save();
    });
    this.form.validateButton.addEventListener("click", () => void this.validate());
    this.form.cancelButton.addEventListener("click", () => {
      this.form.reset();
      this.form.say(this.form.error, null);
      this.form.say(this.form.status, null);
    });
  }

  /** Shows the project's scheduled exports, or the notice when the role may not see them. */
  start(projectId: string, onUnauthorized: (message: string) => void): void {
    this.stop();
    this.projectId = projectId;
    this.onUnauthorized = onUnauthorized;
    this.form.reset();
    this.form.say(this.form.error, null);
    this.form.say(this.form.status, null);
    this.notice.hidden = true;
    this.content.hidden = false;
    this.listElements.body.replaceChildren();
    this.list = new ScheduledList(this.client, projectId, this.listElements, {
      onForbidden: () => this.forbidden(),
      onUnauthorized,
      onEdit: (item) => {
        this.form.say(this.form.error, null);
        this.form.say(this.form.status, null);
        this.form.edit(item);
      },
      onDeleted: (id) => {
        if (this.form.editingId === id) this.form.reset();
      },
    });
    this.list.start();
  }

  stop(): void {
    this.list?.stop();
    this.list = null;
    this.projectId = null;
    this.form.forgetSecrets();
  }

  private forbidden(): void {
    this.list?.stop();
    this.content.hidden = true;
    this.listElements.summary.textContent = "";
    this.notice.textContent = NEEDS_ADMIN;
    this.notice.hidden = false;
  }

  /** FORBIDDEN and UNAUTHORIZED take the section (or the page) away; anything else is the caller's to show. */
  private refused(error: unknown): boolean {
    if (isUnauthorized(error)) {
      this.stop();
      this.onUnauthorized(describeError(error));
      return true;
    }
    if (isForbidden(error)) {
      this.forbidden();
      return true;
    }
    return false;
  }

  private async save(): Promise<void> {
    const projectId = this.projectId;
    if (!projectId) return;
    const form = this.form;
    form.say(form.error, null);
    form.say(form.status, null);
    form.showIssues([]);
    const editingId = form.editingId;
    form.submitButton.disabled = true;
    try {
      const saved = editingId
        ? await this.client.scheduledExport.update(form.updateParams(projectId, editingId))
        : await this.client.scheduledExport.create(form.createParams(projectId));
      // The secret has gone to the server, which keeps it sealed: it stays nowhere on the page.
      form.forgetSecrets();
      form.reset();
      form.say(form.status, editingId ? `Saved “${saved.name}”.` : `Created “${saved.name}”: it appears in the list above.`);
      await this.list?.refresh();
    } catch (error) {
      if (error instanceof ScheduledInputError) return form.say(form.error, error.message);
      if (this.refused(error)) return;
      if (error instanceof RpcError) form.showIssues(error.data.issues ?? []);
      const what = editingId ? "Could not save the scheduled export." : "Could not create the scheduled export.";
      form.say(form.error, `${what} ${describeError(error)}`);
    } finally {
      form.submitButton.disabled = false;
    }
  }

  /** The destination as typed; while editing with the secret left empty, the stored one with its stored secret. */
  private async validate(): Promise<void> {
    const projectId = this.projectId;
    if (!projectId) return;
    const form = this.form;
    form.say(form.validation, "Validating…", "validation");
    form.showIssues([]);
    const editingId = form.editingId;
    let params: ValidateDestination;
    if (editingId && !form.hasSecret()) {
      if (!form.destinationUnchanged()) {
        form.say(form.validation, "Type the secret to validate a changed destination: the stored one belongs to the stored destination.", "validation validation-bad");
        return;
      }
      params = { projectId, scheduledExportId: editingId };
    } else {
      params = { projectId, destination: form.destination() };
    }
    form.validateButton.disabled = true;
    try {
      const result = await this.client.scheduledExport.validate(params);
      form.say(form.validation, `${result.ok ? "Valid" : "Not valid"}: ${result.message}`, `validation validation-${result.ok ? "ok" : "bad"}`);
    } catch (error) {
      if (this.refused(error)) return;
      if (error instanceof RpcError) form.showIssues(error.data.issues ?? []);
      form.say(form.validation, `Could not validate. ${describeError(error)}`, "validation validation-bad");
    } finally {
      form.validateButton.disabled = false;
    }
  }
}
