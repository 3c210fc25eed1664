/**
 * The column picker: one checkbox per column of the table's files, in file order, all ticked for a
 * new table. Every column ticked is sent as `columns: null`, which alone also brings the rows'
 * per-score-name columns; a narrower choice is sent as the ticked keys, in table order whatever the
 * order they were ticked in.
 */
import { columnLabel, type ExportColumn, type TableInfo } from "./catalog.js";

/** Nothing is ticked: there would be no file to write. */
export class ColumnInputError extends Error {
  override readonly name = "ColumnInputError";
}

export interface ColumnPickerElements {
  list: HTMLElement;
  all: HTMLButtonElement;
  none: HTMLButtonElement;
  summary: HTMLElement;
}

export class ColumnPicker {
  private table: TableInfo | null = null;
  private boxes: HTMLInputElement[] = [];

  constructor(private readonly elements: ColumnPickerElements) {
    elements.all.addEventListener("click", () => this.tickAll(true));
    elements.none.addEventListener("click", () => this.tickAll(false));
    // One listener for every box: the list is refilled on each table change.
    elements.list.addEventListener("change", () => this.summarize());
  }

  /** A new table has other columns: all of them, ticked. */
  setTable(table: TableInfo): void {
    this.table = table;
    this.boxes = [];
    this.elements.list.replaceChildren(...table.columns.map((column) => this.item(column)));
    this.summarize();
  }

  /** The `columns` to send: null for every column, else the ticked keys in table order. */
  columns(): string[] | null {
    const ticked = this.boxes.filter((box) => box.checked).map((box) => box.value);
    if (ticked.length === 0) {
      throw new ColumnInputError("Choose at least one column to export, or All for every column.");
    }
    return ticked.length === this.boxes.length ? null : ticked;
  }

  private item(column: ExportColumn): HTMLLIElement {
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = column.id;
    box.checked = true;
    this.boxes.push(box);
    const label = document.createElement("label");
    label.append(box, ` ${columnLabel(column)}`);
    // The key is what the file's header (or the JSON key) will read; the type is its Parquet type.
    label.title = column.name === column.id ? column.type : `${column.id} · ${column.type}`;
    const item = document.createElement("li");
    item.append(label);
    return item;
  }

  private tickAll(checked: boolean): void {
    for (const box of this.boxes) box.checked = checked;
    this.summarize();
  }

  private summarize(): void {
    const total = this.boxes.length;
    const ticked = this.boxes.filter((box) => box.checked).length;
    const scores = this.table?.scoreColumns ?? false;
    let text: string;
    if (ticked === total) text = scores ? `All ${total} columns, then one per score name.` : `All ${total} columns.`;
    else if (ticked === 0) text = "No columns ticked.";
    // Score columns follow only `columns: null`: say so where unticking one drops them.
    else text = `${ticked} of ${total} columns${scores ? ", without the score columns" : ""}.`;
    this.elements.summary.textContent = text;
  }
}
