/**
 * The table catalog: which columns each table's files have, which can be filtered, with which
 * operators, and how they can be ordered. Read from static/tables.json, which web/scripts/tables_json.py generates
 * from workers/tables.py and schemas/filters.py, so the page offers only what the server accepts.
 */
import type { BatchExportQuery, OrderBy } from "../../clients/ts/src/client.js";

export type TableName = BatchExportQuery["tableName"];
export type Filter = NonNullable<BatchExportQuery["filter"]>[number];
export type FilterType = Filter["type"];
export type Operator = Filter["operator"];
/** The input a filter's value needs. */
export type ValueKind = "text" | "number" | "datetime" | "boolean" | "list" | "none";

export interface FilterTypeInfo {
  operators: Operator[];
  value: ValueKind;
  /** False where the value may be left out (a trace position that needs no number, `is not empty`). */
  valueRequired: boolean;
  /** The filter names a key: of a JSON column (metadata.customer = "acme"), or a score's name. */
  key: boolean;
  keyRequired: boolean;
  /** The keys allowed, when they are a fixed list (a trace position: root, first, …). */
  keyChoices: string[] | null;
}

export interface FilterColumn {
  id: string;
  /** The display name the product's tables show. */
  name: string;
  /** Its own filter type first, then the types that apply to it too, then `null` (is null / is not null). */
  filterTypes: FilterType[];
}

/** A column of the table's files, as `columns` names it (by id). */
export interface ExportColumn {
  id: string;
  /** The display name the product's tables show, or the id where the column has none. */
  name: string;
  /** Its type in a Parquet file ("string", "int64", "timestamp[us, UTC]", …). */
  type: string;
}

export interface TableInfo {
  name: TableName;
  /** The file's columns, in file order. */
  columns: ExportColumn[];
  /** The rows also carry one column per score name of the project, which only `columns: null` brings. */
  scoreColumns: boolean;
  /** Its rows have an ingestion time, so a scheduled export can split them into windows (all but sessions). */
  schedulable: boolean;
  filterColumns: FilterColumn[];
  sortColumns: string[];
  defaultOrder: OrderBy;
}

export interface Catalog {
  filterTypes: Record<FilterType, FilterTypeInfo>;
  tables: TableInfo[];
}

export async function loadCatalog(url = "static/tables.json"): Promise<Catalog> {
  const response = await fetch(url, { headers: { accept: "application/json" } });
  if (!response.ok) throw new Error(`Could not load the table definitions (${url}: HTTP ${response.status}).`);
  return (await response.json()) as Catalog;
}

/** "dataset_run_items" → "Dataset run items". */
export function tableLabel(name: string): string {
  const words = name.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** The display name the product's tables show; the id too when the name is only a symbol (⭐️). */
export function columnLabel(column: { id: string; name: string }): string {
  return /\p{L}/u.test(column.name) ? column.name : `${column.name} ${column.id}`;
}
