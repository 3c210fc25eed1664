/**
 * The filter builder: rows of column · operator · [key] · value, offering only the columns a table
 * can be filtered by and the operators of each column's filter type (see catalog.ts).
 */
import { columnLabel, type Catalog, type Filter, type FilterColumn, type FilterType, type Operator, type TableInfo, type ValueKind } from "./catalog.js";

/** A row the user has not finished: the message says which row and what is missing. */
export class FilterInputError extends Error {
  override readonly name = "FilterInputError";
}

interface Row {
  element: HTMLElement;
  column: HTMLSelectElement;
  operator: HTMLSelectElement;
  key: HTMLInputElement;
  /** The key as a choice, for filter types whose keys are a fixed list. */
  keyChoice: HTMLSelectElement;
  valueSlot: HTMLElement;
  value: HTMLInputElement | HTMLSelectElement | null;
  valueKind: ValueKind | null;
}

export class FilterBuilder {
  private table: TableInfo | null = null;
  private rows: Row[] = [];

  constructor(
    private readonly catalog: Catalog,
    private readonly list: HTMLElement,
    private readonly addButton: HTMLButtonElement,
  ) {
    addButton.addEventListener("click", () => this.addRow());
  }

  /** A new table has other columns: its filters start empty. */
  setTable(table: TableInfo): void {
    this.table = table;
    for (const row of this.rows) row.element.remove();
    this.rows = [];
    this.addButton.disabled = table.filterColumns.length === 0;
    this.addButton.title = table.filterColumns.length === 0 ? "This table has no filterable columns" : "";
  }

  /** The filters as the API takes them; throws FilterInputError for an unfinished row. */
  filters(): Filter[] {
    return this.rows.map((row, index) => this.readRow(row, index + 1));
  }

  addRow(): void {
    if (!this.table) return;
    const element = document.createElement("li");
    element.className = "filter-row";
    const column = select("Filter column", this.table.filterColumns.map((c) => [c.id, columnLabel(c)]));
    const operator = select("Filter operator", []);
    const key = document.createElement("input");
    key.type = "text";
    key.placeholder = "key";
    key.setAttribute("aria-label", "Filter key");
    key.className = "filter-key";
    const keyChoice = select("Choose the key", []);
    keyChoice.className = "filter-key";
    const valueSlot = document.createElement("span");
    valueSlot.className = "filter-value";
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "icon";
    remove.textContent = "×";
    remove.title = "Remove this filter";
    remove.setAttribute("aria-label", "Remove filter");
    element.append(column, operator, key, keyChoice, valueSlot, remove);

    const row: Row = { element, column, operator, key, keyChoice, valueSlot, value: null, valueKind: null };
    column.addEventListener("change", () => this.fillOperators(row));
    operator.addEventListener("change", () => this.fillValue(row));
    remove.addEventListener("click", () => {
      element.remove();
      this.rows = this.rows.filter((r) => r !== row);
    });
    this.rows.push(row);
    this.list.append(element);
    this.fillOperators(row);
    column.focus();
  }

  private columnOf(row: Row): FilterColumn {
    const found = this.table?.filterColumns.find((c) => c.id === row.column.value);
    if (!found) throw new FilterInputError("Choose a column for every filter.");
    return found;
  }

  /** Operators are offered as "type|operator": the same word (=) can belong to two filter types. */
  private fillOperators(row: Row): void {
    const column = this.columnOf(row);
    const options: [string, string][] = [];
    const offered = new Set<string>();
    for (const type of column.filterTypes) {
      for (const op of this.catalog.filterTypes[type].operators) {
        // A compatible type's operator of the same name (stringOptions' "any of" on a tags column)
        // would be a second, indistinguishable entry: the column's own type comes first and wins.
        if (offered.has(op)) continue;
        offered.add(op);
        options.push([`${type}|${op}`, op]);
      }
    }
    replaceOptions(row.operator, options);
    this.fillValue(row);
  }

  private chosen(row: Row): { type: FilterType; operator: Operator } {
    const [type, ...rest] = row.operator.value.split("|");
    return { type: type as FilterType, operator: rest.join("|") as Operator };
  }

  private fillValue(row: Row): void {
    const info = this.catalog.filterTypes[this.chosen(row).type];
    const choices = info.keyChoices;
    row.key.hidden = !info.key || choices !== null;
    row.keyChoice.hidden = choices === null;
    if (choices !== null && [...row.keyChoice.options].map((o) => o.value).join("|") !== choices.join("|")) {
      replaceOptions(row.keyChoice, choices.map((c) => [c, c]));
    }
    if (row.valueKind === info.value) return; // keep what the user typed
    row.valueKind = info.value;
    row.valueSlot.replaceChildren();
    row.value = valueInput(info.value);
    if (row.value) row.valueSlot.append(row.value);
  }

  private readRow(row: Row, position: number): Filter {
    const column = this.columnOf(row);
    const { type, operator } = this.chosen(row);
    const info = this.catalog.filterTypes[type];
    const where = `Filter ${position} (${column.name})`;
    const filter: Record<string, unknown> = { column: column.id, type, operator };
    if (info.keyChoices !== null) {
      filter.key = row.keyChoice.value;
    } else if (info.key) {
      const key = row.key.value.trim();
      if (key) filter.key = key;
      else if (info.keyRequired) throw new FilterInputError(`${where}: enter the key to look up, e.g. "customer".`);
    }
    const raw = row.value?.value ?? "";
    // A value that may be left out is left out when empty (a trace position of root needs no number).
    if (!info.valueRequired && info.value !== "none" && raw.trim() === "") {
      if (info.value === "text") filter.value = "";
      return filter as unknown as Filter;
    }
    switch (info.value) {
      case "none":
        filter.value = "";
        break;
      case "text":
        filter.value = raw;
        break;
      case "number": {
        const number = Number(raw);
        if (raw.trim() === "" || !Number.isFinite(number)) throw new FilterInputError(`${where}: enter a number.`);
        filter.value = number;
        break;
      }
      case "datetime": {
        const time = new Date(raw); // datetime-local: the reader's own time zone
        if (!raw || Number.isNaN(time.getTime())) throw new FilterInputError(`${where}: choose a date and time.`);
        filter.value = time.toISOString();
        break;
      }
      case "boolean":
        filter.value = raw === "true";
        break;
      case "list": {
        const values = raw.split(",").map((v) => v.trim()).filter(Boolean);
        if (values.length === 0) throw new FilterInputError(`${where}: enter one or more values, separated by commas.`);
        filter.value = values;
        break;
      }
    }
    // The shape is the one the catalog (and so the server) describes for this type.
    return filter as unknown as Filter;
  }
}

function select(label: string, options: [string, string][]): HTMLSelectElement {
  const element = document.createElement("select");
  element.setAttribute("aria-label", label);
  replaceOptions(element, options);
  return element;
}

function replaceOptions(element: HTMLSelectElement, options: [string, string][]): void {
  element.replaceChildren(...options.map(([value, text]) => new Option(text, value)));
}

function valueInput(kind: ValueKind): HTMLInputElement | HTMLSelectElement | null {
  if (kind === "none") return null;
  if (kind === "boolean") return select("Filter value", [["true", "true"], ["false", "false"]]);
  const input = document.createElement("input");
  input.setAttribute("aria-label", "Filter value");
  if (kind === "number") {
    input.type = "number";
    input.step = "any";
  } else if (kind === "datetime") {
    input.type = "datetime-local";
    input.step = "1";
  } else {
    input.type = "text";
    input.placeholder = kind === "list" ? "values, separated by commas" : "value";
  }
  return input;
}
