"""Demo and test data: realistic, deterministic rows in every exportable table of one project.

The bulk is generated inside Postgres (`INSERT ... SELECT ... FROM generate_series`), every
"random" choice being a slice of `hashint8extended(row number, seed)`: no row crosses the wire,
and the same `rng_seed` always yields the same rows. A small, fixed layer written from
Python then puts every value of `fixtures/awkward_values.json` into those rows (trace names,
user ids, tags, metadata, inputs and outputs, observation names and status messages, score
comments, dataset items, audit-log before/after), because those are the values that break
exporters.

Row ids are readable and stable (`t-00000042`, `o-00000042-2`, `sc-00000042-1`, `ds-01`, ...);
they repeat across projects, which the (project_id, id) keys allow. Seeding a project that already
has traces raises `SeedError` instead of mixing two data sets (see `seed`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import psycopg
from psycopg import conninfo, sql
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

# Trace numbers are zero-padded to this width inside ids, so ids sort like numbers.
_ID_WIDTH = 8
MAX_TRACES = 10**_ID_WIDTH - 1
DATASET_COUNT = 3
RUNS_PER_DATASET = 3
MAX_ITEMS_PER_DATASET = 10_000
AUDIT_LOG_COUNT = 12
# Session ids are indexed; hostile strings longer than this stay out of them (a btree entry is capped).
_MAX_AWKWARD_SESSION_ID = 200

SEEDED_TABLES = (
    "traces",
    "observations",
    "scores",
    "comments",
    "trace_sessions",
    "datasets",
    "dataset_items",
    "dataset_runs",
    "dataset_run_items",
    "audit_logs",
)


class SeedError(ValueError):
    """The project cannot be seeded as asked; the message says why and what to do."""


@dataclass(frozen=True)
class AwkwardValues:
    strings: list[str]
    json_values: list[Any]


def load_awkward_values() -> AwkwardValues:
    """The hostile strings and JSON values shipped with the package (devstack/fixtures)."""
    text = (resources.files("devstack") / "fixtures" / "awkward_values.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return AwkwardValues(strings=list(data["strings"]), json_values=list(data["json_values"]))


# The vocabulary the generator draws from. Some entries carry unicode, quotes, commas and newlines
# on purpose: realistic data has them too, not only the awkward layer.
POOLS: dict[str, list[str]] = {
    "trace_names": [
        "chat-completion",
        "rag-pipeline",
        "summarize-document",
        "classify-ticket",
        "agent-run",
        "translate",
        "extract-entities",
        "qa-bot",
    ],
    "environments": [
        "production",
        "production",
        "production",
        "production",
        "staging",
        "staging",
        "development",
        "default",
    ],
    "regions": ["eu-west-1", "us-east-1", "ap-northeast-1", "sa-east-1"],
    "tiers": ["free", "pro", "enterprise"],
    "locales": ["en-US", "de-DE", "ja-JP", "fr-FR", "pt-BR"],
    "questions": [
        "How do I reset my password?",
        "Summarize the Q3 report, focusing on revenue, costs and risks.",
        'What does "idempotent" mean in an HTTP API?',
        "Wie spät ist es in Tokio?\nBitte kurz antworten.",
        "日本の首都はどこですか？",
        "Translate to French: 'The invoice is overdue.'",
        "List three risks of the migration, one per line.",
        "¿Cuál es la política de devoluciones?",
        "Explain the error: KeyError: 'user_id'",
        "Write a haiku about latency 🐢",
    ],
    "answers": [
        "Open Settings → Security and choose “Reset password”.",
        "Revenue grew 12%, costs 4%; the main risk is FX exposure.",
        'An idempotent request has the same effect whether it is sent once or "n" times.',
        "Es ist 21:30 Uhr in Tokio.",
        "東京です。",
        "La facture est en retard.",
        "1. Downtime\n2. Data loss\n3. Rollback, if needed, is slow",
        "Puedes devolver el producto en 30 días.",
        "The dict has no key 'user_id'; check the payload, e.g. {\"userId\": 1}.",
        "Packets wander slow,\nthe spinner turns, and turns, and —\ntimeout. Try again.",
    ],
    "system_prompts": [
        "You are a helpful assistant. Answer concisely.",
        "You answer support questions, citing the knowledge base: [doc-id].",
        "Du bist ein präziser Übersetzer.",
    ],
    "generation_names": ["llm-call", "openai.chat.completions", "anthropic.messages", "generate-answer"],
    "span_names": ["retrieve-documents", "rerank", "tool:web_search", "postprocess", "guardrails"],
    "event_names": ["cache-hit", "user-feedback", "tool-selected", "retry"],
    "models": [
        "gpt-4o",
        "gpt-4o-mini",
        "claude-3-5-sonnet-20241022",
        "claude-3-haiku-20240307",
        "llama-3.1-70b-instruct",
        "mistral-large-latest",
        "gemini-1.5-pro",
    ],
    "prompt_names": ["support-answer", "summarizer", "classifier/v2", "translator"],
    "errors": [
        "Rate limit exceeded (429): retry after 20s",
        "Upstream timeout after 30s, giving up",
        'Invalid JSON in tool call: unexpected token "}" at 1:17',
        "Content filter triggered: category=violence, severity=medium",
    ],
    "warnings": [
        "Response truncated: max_tokens reached",
        "Fallback model used; primary unavailable",
        "Retrieved 0 documents, answering without context",
    ],
    "tag_sets": [
        "{}",
        "{production}",
        "{beta,rag}",
        "{experiment:a}",
        "{experiment:b,beta}",
        "{vip}",
        '{"with space","comma, tag"}',
        "{mobile,ios}",
    ],
    "numeric_score_names": ["accuracy", "relevance", "helpfulness", "toxicity"],
    "boolean_score_names": ["is_correct", "contains_pii", "user_thumbs_up"],
    "categorical_score_names": ["sentiment", "topic"],
    "categories": ["positive", "neutral", "negative", "billing", "bug-report"],
    "text_score_names": ["reviewer_note", "rationale"],
    "comments": [
        "Customer escalated this one; see ticket #4521.",
        "Wrong document retrieved, the answer is still right.",
        "Latency spike: the retriever timed out twice.",
        "@anna can you check the prompt version here?",
        "Gute Antwort, aber zu lang.",
        "Used for the Q3 eval set.",
    ],
    "comment_authors": ["user-000001", "user-000002", "user-000003"],
    "tools": ["web_search", "get_weather", "lookup_order", "calculator", "send_email"],
    "services": ["support-bot", "rag-api", "eval-runner"],
    "scopes": ["langfuse-sdk", "openinference.instrumentation.openai", "opentelemetry.instrumentation.httpx"],
    "sdk_languages": ["python", "python", "node"],
    "score_comments": [
        "Looks right, but cites the wrong document.",
        'Too verbose; the "short answer" was asked for.',
        "Halluzination: erfundene Quelle",
        "Good.\nWould ship.",
    ],
}
# USD per million tokens (input, output), in the order of POOLS["models"].
MODEL_PRICES = [(2.5, 10.0), (0.15, 0.6), (3.0, 15.0), (0.25, 1.25), (0.88, 0.88), (2.0, 6.0), (1.25, 5.0)]
DATASETS = [
    ("ds-01", "qa-golden-set", "Hand-checked question/answer pairs"),
    ("ds-02", "support-tickets", "Tickets, with the category a human chose"),
    ("ds-03", 'summaries "v2", FR/DE', "Summaries; German and French, with quotes, commas"),
]
RUN_NAMES = ["baseline gpt-4o-mini", 'prompt v2 — "strict"', "claude-3.5, temp=0"]


# Every choice of the bulk is a bit slice of hashint8extended(row number, seed). JSON values and
# derived numbers come from a few thousand precomputed "profile" rows, joined by such a hash:
# building JSON costs microseconds per value, which over millions of rows would be most of the
# budget. `OFFSET 0` stops the planner from inlining a subquery, which would compute its hashes
# once per reference and its profiles' JSON once per joined row rather than once.
_POOLS_CTE = """
WITH pools AS (
    SELECT %(trace_names)s::text[] AS trace_names, %(environments)s::text[] AS environments,
           %(regions)s::text[] AS regions, %(tiers)s::text[] AS tiers, %(locales)s::text[] AS locales,
           %(questions)s::text[] AS questions, %(answers)s::text[] AS answers,
           %(system_prompts)s::text[] AS system_prompts, %(generation_names)s::text[] AS generation_names,
           %(span_names)s::text[] AS span_names, %(event_names)s::text[] AS event_names,
           %(models)s::text[] AS models, %(input_prices)s::numeric[] AS input_prices,
           %(output_prices)s::numeric[] AS output_prices, %(prompt_names)s::text[] AS prompt_names,
           %(errors)s::text[] AS errors, %(warnings)s::text[] AS warnings, %(tag_sets)s::text[] AS tag_sets,
           %(numeric_score_names)s::text[] AS numeric_score_names,
           %(boolean_score_names)s::text[] AS boolean_score_names,
           %(categorical_score_names)s::text[] AS categorical_score_names,
           %(categories)s::text[] AS categories, %(text_score_names)s::text[] AS text_score_names,
           %(score_comments)s::text[] AS score_comments, %(comments)s::text[] AS comments,
           %(comment_authors)s::text[] AS comment_authors, %(tools)s::text[] AS tools,
           %(services)s::text[] AS services, %(scopes)s::text[] AS scopes, %(sdk_languages)s::text[] AS sdk_languages
),"""

# One row per trace, computed identically by every statement that needs a trace's fields, so
# observations and scores line up with their trace without reading the traces table back.
# Trace n is the n-th oldest (ids, timestamps and session ids all grow with n, so every index is
# appended to rather than written all over); sessions interleave 16 to a window of 64 traces.
# h: the trace's hash; hc: its children's; hs: its session's (user and environment follow the session).
_TRACE_FRAME_CTE = """
trace_frame AS (
    SELECT g.n, g.h, g.hc,
           't-' || lpad(g.n::text, 8, '0') AS trace_id,
           %(start)s::timestamptz
             + ((g.n - 1) * %(step_ms)s + (g.h & 2147483647) %% %(step_ms)s) * interval '1 millisecond' AS ts,
           CASE WHEN g.hs & 3 = 0 THEN NULL ELSE 'sess-' || lpad(g.session_key::text, 8, '0') END AS session_id,
           CASE WHEN (g.hs >> 2) & 15 = 0 THEN NULL
                ELSE 'user-' || lpad((((g.hs >> 8) & 2147483647) %% %(users)s)::text, 6, '0') END AS user_id,
           p.environments[1 + ((g.hs >> 40) & 255) %% cardinality(p.environments)] AS environment,
           p.trace_names[1 + ((g.h >> 32) & 65535) %% cardinality(p.trace_names)] AS name,
           -- the trace's question; its generations are asked the same one
           (g.h & 4095) %% cardinality(p.questions) AS question,
           400 + (g.hc & 2147483647) %% 24600 AS duration_ms,
           1 + ((g.hc >> 32) & 65535) %% 5 AS observation_count,
           CASE WHEN g.n <= %(awkward_traces)s THEN 1 + ((g.hc >> 48) & 65535) %% 2
                ELSE ((g.hc >> 48) & 65535) %% 3 END AS score_count
    FROM (
        SELECT x.*, hashint8extended(x.session_key, %(seed)s + 1) AS hs
        FROM (
            SELECT n, h, hc, (n - 1) / 64 * 16 + ((h >> 20) & 15) AS session_key
            FROM (
                SELECT n, hashint8extended(n, %(seed)s) AS h, hashint8extended(n, %(seed)s + 2) AS hc
                FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS n
                OFFSET 0
            ) AS hashed
        ) AS x
        OFFSET 0
    ) AS g, pools AS p
    OFFSET 0
)"""

INSERT_TRACES_SQL = sql.Composed(
    [
        sql.SQL(_POOLS_CTE),
        sql.SQL("""
trace_profiles AS (
    SELECT x.k,
           jsonb_build_object(
               'question', p.questions[1 + x.k %% cardinality(p.questions)],
               'context', jsonb_build_object('locale', p.locales[1 + (x.hk & 255) %% cardinality(p.locales)],
                                             'documents', (x.hk >> 8) & 7)) AS input,
           CASE WHEN (x.hk >> 11) & 31 = 0 THEN NULL
                ELSE jsonb_build_object(
                    'answer', p.answers[1 + x.k %% cardinality(p.questions)],
                    'finish_reason', CASE WHEN (x.hk >> 11) & 31 = 1 THEN 'length' ELSE 'stop' END) END AS output,
           jsonb_build_object(
               'customer_tier', p.tiers[1 + ((x.hk >> 16) & 255) %% cardinality(p.tiers)],
               'region', p.regions[1 + ((x.hk >> 24) & 255) %% cardinality(p.regions)],
               'request', jsonb_build_object('retries', (x.hk >> 32) & 3, 'cached', (x.hk >> 34) & 1 = 1),
               'sdk', 'python/2.' || ((x.hk >> 35) & 15))
             -- an LLM-as-a-judge run marks its traces with the evaluator that made them
             || CASE WHEN (x.hk >> 60) & 7 = 0 THEN jsonb_build_object('evaluator_id', 'eval-' || (1 + ((x.hk >> 63) & 1)))
                     ELSE '{}'::jsonb END AS metadata,
           p.tag_sets[1 + ((x.hk >> 40) & 255) %% cardinality(p.tag_sets)]::text[] AS tags,
           CASE WHEN (x.hk >> 48) & 7 = 0 THEN NULL
                ELSE 'v1.' || ((x.hk >> 51) & 7) || '.' || ((x.hk >> 54) & 3) END AS release,
           CASE WHEN (x.hk >> 56) & 3 = 0 THEN NULL ELSE 'rev-' || (1 + ((x.hk >> 58) & 15)) END AS version
    FROM (SELECT k, hashint8extended(k, %(seed)s + 10) AS hk FROM generate_series(0, 4095) AS k OFFSET 0) AS x,
         pools AS p
    OFFSET 0
),"""),
        sql.SQL(_TRACE_FRAME_CTE),
        sql.SQL("""
INSERT INTO traces (id, project_id, timestamp, name, user_id, session_id, release, version, environment,
                    tags, bookmarked, public, input, output, metadata, created_at, updated_at)
SELECT t.trace_id, %(project_id)s, t.ts, t.name, t.user_id, t.session_id, tp.release, tp.version,
       t.environment, tp.tags, (t.h >> 48) & 15 = 0, (t.h >> 52) & 31 = 1, tp.input, tp.output, tp.metadata,
       t.ts + interval '2 seconds', t.ts + interval '2 seconds'
FROM trace_frame AS t
JOIN trace_profiles AS tp ON tp.k = t.h & 4095
"""),
    ]
)

# Observation profiles: k decides the question (k mod the number of questions), the rest is the hash.
INSERT_OBSERVATIONS_SQL = sql.Composed(
    [
        sql.SQL(_POOLS_CTE),
        sql.SQL("""
observation_profiles AS (
    SELECT y.*,
           jsonb_build_object('input', y.input_tokens, 'output', y.output_tokens,
                              'total', y.input_tokens + y.output_tokens) AS usage,
           -- float8, not numeric, in JSON: numeric keeps its scale (0.30000000000000000000), an SDK sends 0.3.
           jsonb_build_object('input', y.input_cost::float8, 'output', y.output_cost::float8,
                              'total', (y.input_cost + y.output_cost)::float8) AS cost,
           y.input_cost + y.output_cost AS total_cost,
           CASE WHEN y.prompt_name IS NOT NULL THEN 'prompt-' || y.prompt_name || '-' || y.prompt_version END AS prompt_id
    FROM (
        SELECT x.k, x.hk,
               p.generation_names[1 + (x.hk & 255) %% cardinality(p.generation_names)] AS generation_name,
               jsonb_build_array(
                   jsonb_build_object('role', 'system', 'content',
                                      p.system_prompts[1 + ((x.hk >> 8) & 255) %% cardinality(p.system_prompts)]),
                   jsonb_build_object('role', 'user', 'content', p.questions[1 + x.question])) AS generation_input,
               jsonb_build_object('role', 'assistant', 'content', p.answers[1 + x.question]) AS generation_output,
               jsonb_build_object('stream', (x.hk >> 16) & 1 = 1, 'attempt', 1 + ((x.hk >> 17) & 1)) AS generation_metadata,
               p.models[x.model] AS model,
               'model-' || x.model AS internal_model_id,
               jsonb_build_object('temperature', (((x.hk >> 18) & 7) / 10.0)::float8,
                                  'max_tokens', 256 * (1 + ((x.hk >> 21) & 7))) AS model_parameters,
               x.input_tokens, x.output_tokens,
               round(x.input_tokens * p.input_prices[x.model] / 1000000, 8) AS input_cost,
               round(x.output_tokens * p.output_prices[x.model] / 1000000, 8) AS output_cost,
               CASE WHEN (x.hk >> 24) & 3 < 2
                    THEN p.prompt_names[1 + ((x.hk >> 26) & 255) %% cardinality(p.prompt_names)] END AS prompt_name,
               CASE WHEN (x.hk >> 24) & 3 < 2 THEN 1 + ((x.hk >> 34) & 3)::int END AS prompt_version,
               p.span_names[1 + ((x.hk >> 36) & 255) %% cardinality(p.span_names)] AS span_name,
               jsonb_build_object('query', p.questions[1 + x.question], 'top_k', 5) AS span_input,
               jsonb_build_object('documents', (x.hk >> 44) & 7, 'status', 'ok') AS span_output,
               p.event_names[1 + ((x.hk >> 47) & 255) %% cardinality(p.event_names)] AS event_name,
               jsonb_build_object('source', 'sdk', 'tags', jsonb_build_array('ui', 'v2')) AS event_metadata,
               CASE WHEN (x.hk >> 55) & 3 = 0 THEN NULL ELSE 'rev-' || (1 + ((x.hk >> 57) & 7)) END AS version,
               -- Tools: up to three offered (a JSON schema each), and one or two of them called.
               (SELECT coalesce(jsonb_object_agg(p.tools[1 + (x.tool_first + i) %% cardinality(p.tools)],
                                                 jsonb_build_object(
                                                     'description', 'Calls ' || p.tools[1 + (x.tool_first + i) %% cardinality(p.tools)],
                                                     'parameters', jsonb_build_object(
                                                         'type', 'object',
                                                         'properties', jsonb_build_object('query', jsonb_build_object('type', 'string'))))),
                                '{}'::jsonb)
                FROM generate_series(0, x.tools_offered - 1) AS i) AS tool_definitions,
               (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                    'id', 'call_' || x.k || '_' || i,
                                    'name', p.tools[1 + (x.tool_first + i) %% cardinality(p.tools)],
                                    'arguments', jsonb_build_object('query', p.questions[1 + x.question])) ORDER BY i),
                                '[]'::jsonb)
                FROM generate_series(0, x.tools_called - 1) AS i) AS tool_calls,
               ARRAY(SELECT p.tools[1 + (x.tool_first + i) %% cardinality(p.tools)]
                     FROM generate_series(0, x.tools_called - 1) AS i ORDER BY i) AS tool_call_names,
               p.services[1 + ((x.ht >> 8) & 255) %% cardinality(p.services)] AS service_name,
               CASE WHEN (x.ht >> 16) & 7 = 0 THEN NULL ELSE '2.' || ((x.ht >> 19) & 7) || '.0' END AS service_version,
               p.scopes[1 + ((x.ht >> 22) & 255) %% cardinality(p.scopes)] AS scope_name,
               '0.' || (30 + ((x.ht >> 30) & 15)) || '.1' AS scope_version,
               p.sdk_languages[1 + ((x.ht >> 34) & 255) %% cardinality(p.sdk_languages)] AS sdk_language,
               '1.' || (24 + ((x.ht >> 42) & 7)) || '.0' AS sdk_version
        FROM (
            SELECT k, hk, ht, ht & 3 AS tools_offered, least(ht & 3, (ht >> 2) & 3) AS tools_called,
                   (ht >> 4) & 15 AS tool_first,
                   k %% %(questions_count)s AS question, 1 + ((hk >> 40) & 255) %% %(models_count)s AS model,
                   20 + ((hashint8extended(k, %(seed)s + 12) >> 8) & 65535) %% 3980 AS input_tokens,
                   5 + ((hashint8extended(k, %(seed)s + 12) >> 32) & 65535) %% 1200 AS output_tokens
            FROM (SELECT k, hashint8extended(k, %(seed)s + 11) AS hk, hashint8extended(k, %(seed)s + 14) AS ht
                  FROM generate_series(0, 256 * %(questions_count)s - 1) AS k OFFSET 0) AS h
        ) AS x, pools AS p
    ) AS y
    OFFSET 0
),"""),
        sql.SQL(_TRACE_FRAME_CTE),
        sql.SQL(""",
-- A trace a dataset run executed carries the experiment on each of its observations (as Langfuse's
-- events do); a trace several runs picked carries the first run item by id. The run items are
-- written before the observations, so each observation is written once, experiment included.
experiments AS (
    SELECT DISTINCT ON (ri.trace_id) substr(ri.trace_id, 3)::bigint AS n, r.dataset_id, r.id AS run_id,
           r.name AS run_name, ri.dataset_item_id
    FROM dataset_run_items AS ri
    JOIN dataset_runs AS r ON r.project_id = ri.project_id AND r.id = ri.dataset_run_id
    WHERE ri.project_id = %(project_id)s AND ri.trace_id BETWEEN %(first_id)s AND %(last_id)s
    ORDER BY ri.trace_id, ri.id
),
-- Per trace: one root, then children that each own a slice of the trace's duration, so the root
-- spans them all and every latency and time-to-first-token is positive.
children AS (
    SELECT c.*,
           CASE WHEN c.j = 1 THEN c.ts
                ELSE c.ts + (10 + (c.j - 2) * c.slot_ms) * interval '1 millisecond' END AS start_time,
           CASE WHEN c.j = 1 AND c.observation_count > 1 THEN c.duration_ms + 20
                WHEN c.j = 1 THEN c.duration_ms
                WHEN c.type = 'EVENT' THEN 1 + (c.ho & 15)
                ELSE c.slot_ms * (0.3::float8 + ((c.ho >> 4) & 1023) / 1600.0::float8) END AS elapsed_ms
    FROM (
        SELECT t.n, t.trace_id, t.ts, t.name, t.environment, t.question, t.duration_ms, t.observation_count,
               e.dataset_id AS experiment_dataset_id, e.run_id AS experiment_id, e.run_name AS experiment_name,
               e.dataset_item_id AS experiment_item_id, j, o.ho,
               CASE WHEN j = 1 THEN (CASE WHEN t.observation_count = 1 THEN 'GENERATION' ELSE 'SPAN' END)
                    WHEN o.ho & 15 < 10 THEN 'GENERATION'
                    WHEN o.ho & 15 < 13 THEN 'SPAN'
                    ELSE 'EVENT' END AS type,
               t.duration_ms::float8 / greatest(t.observation_count - 1, 1) AS slot_ms
        FROM trace_frame AS t
        LEFT JOIN experiments AS e ON e.n = t.n
        CROSS JOIN LATERAL generate_series(1, t.observation_count) AS j
        CROSS JOIN LATERAL (SELECT hashint8extended(t.n * 8 + j, %(seed)s + 3) AS ho) AS o
        OFFSET 0
    ) AS c
    OFFSET 0
)
INSERT INTO observations (id, project_id, trace_id, parent_observation_id, type, start_time, end_time, name,
                          metadata, level, status_message, version, input, output, model, internal_model_id,
                          model_parameters, completion_start_time, prompt_id, prompt_name, prompt_version,
                          provided_usage_details, usage_details, provided_cost_details, cost_details,
                          total_cost, environment, created_at, updated_at, tool_definitions, tool_calls,
                          tool_call_names, usage_pricing_tier_id, usage_pricing_tier_name, service_name,
                          service_version, scope_name, scope_version, telemetry_sdk_language, telemetry_sdk_name,
                          telemetry_sdk_version, experiment_dataset_id, experiment_id, experiment_name,
                          experiment_item_id, experiment_item_root_span_id)
SELECT 'o-' || lpad(o.n::text, 8, '0') || '-' || o.j, %(project_id)s, o.trace_id,
       CASE WHEN o.j = 1 THEN NULL ELSE 'o-' || lpad(o.n::text, 8, '0') || '-1' END,
       o.type, o.start_time, o.end_time,
       CASE WHEN o.j = 1 AND o.type = 'SPAN' THEN o.name
            WHEN o.generation THEN op.generation_name
            WHEN o.type = 'SPAN' THEN op.span_name
            ELSE op.event_name END,
       CASE o.type WHEN 'GENERATION' THEN op.generation_metadata WHEN 'EVENT' THEN op.event_metadata END,
       o.level,
       CASE o.level WHEN 'ERROR' THEN p.errors[1 + ((o.ho >> 24) & 255) %% cardinality(p.errors)]
                    WHEN 'WARNING' THEN p.warnings[1 + ((o.ho >> 24) & 255) %% cardinality(p.warnings)] END,
       op.version,
       CASE o.type WHEN 'GENERATION' THEN op.generation_input WHEN 'SPAN' THEN op.span_input END,
       CASE o.type WHEN 'GENERATION' THEN op.generation_output WHEN 'SPAN' THEN op.span_output END,
       CASE WHEN o.generation THEN op.model END,
       CASE WHEN o.generation THEN op.internal_model_id END,
       CASE WHEN o.generation THEN op.model_parameters END,
       CASE WHEN o.generation
            THEN o.start_time + o.elapsed_ms * (0.1::float8 + ((o.ho >> 42) & 255) / 512.0::float8) * interval '1 millisecond' END,
       CASE WHEN o.generation THEN op.prompt_id END,
       CASE WHEN o.generation THEN op.prompt_name END,
       CASE WHEN o.generation THEN op.prompt_version END,
       CASE WHEN o.generation AND (o.ho >> 50) & 3 <> 0 THEN op.usage ELSE '{}'::jsonb END,
       CASE WHEN o.generation THEN op.usage ELSE '{}'::jsonb END,
       CASE WHEN o.generation AND (o.ho >> 52) & 3 = 0 THEN op.cost ELSE '{}'::jsonb END,
       CASE WHEN o.generation THEN op.cost ELSE '{}'::jsonb END,
       CASE WHEN o.generation THEN op.total_cost END,
       o.environment, o.end_time + interval '1 second', o.end_time + interval '1 second',
       CASE WHEN o.generation THEN op.tool_definitions ELSE '{}'::jsonb END,
       CASE WHEN o.generation THEN op.tool_calls ELSE '[]'::jsonb END,
       CASE WHEN o.generation THEN op.tool_call_names ELSE '{}'::text[] END,
       CASE WHEN NOT o.generation THEN NULL WHEN op.input_tokens > 3000 THEN 'tier-long-context'
            ELSE 'tier-standard' END,
       CASE WHEN NOT o.generation THEN NULL WHEN op.input_tokens > 3000 THEN 'Long context (>3k input tokens)'
            ELSE 'Standard' END,
       op.service_name, op.service_version, op.scope_name, op.scope_version, op.sdk_language, 'opentelemetry',
       op.sdk_version, o.experiment_dataset_id, o.experiment_id, o.experiment_name, o.experiment_item_id,
       CASE WHEN o.experiment_id IS NOT NULL THEN 'o-' || lpad(o.n::text, 8, '0') || '-1' END
FROM (
    SELECT c.*, c.start_time + c.elapsed_ms * interval '1 millisecond' AS end_time,
           CASE WHEN (c.ho >> 54) & 63 < 2 THEN 'ERROR' WHEN (c.ho >> 54) & 63 < 5 THEN 'WARNING'
                WHEN (c.ho >> 54) & 63 < 10 THEN 'DEBUG' ELSE 'DEFAULT' END AS level,
           -- tested for most columns: a boolean costs less than comparing the text each time
           c.type = 'GENERATION' AS generation
    FROM children AS c
    OFFSET 0
) AS o
JOIN observation_profiles AS op ON op.k = ((o.ho >> 16) & 255) * %(questions_count)s + o.question
CROSS JOIN pools AS p
"""),
    ]
)

# About one score per trace: on the trace, on its root observation, or on its session.
INSERT_SCORES_SQL = sql.Composed(
    [
        sql.SQL(_POOLS_CTE),
        sql.SQL("""
score_profiles AS (
    SELECT x.k, x.data_type, x.source,
           CASE x.data_type
                WHEN 'NUMERIC' THEN p.numeric_score_names[1 + ((x.hk >> 28) & 255) %% cardinality(p.numeric_score_names)]
                WHEN 'BOOLEAN' THEN p.boolean_score_names[1 + ((x.hk >> 28) & 255) %% cardinality(p.boolean_score_names)]
                WHEN 'CATEGORICAL' THEN p.categorical_score_names[1 + ((x.hk >> 28) & 255) %% cardinality(p.categorical_score_names)]
                ELSE p.text_score_names[1 + ((x.hk >> 28) & 255) %% cardinality(p.text_score_names)] END AS name,
           CASE x.data_type WHEN 'NUMERIC' THEN round(((x.hk >> 36) & 1023) / 1023.0, 3)::float8
                            WHEN 'BOOLEAN' THEN ((x.hk >> 36) & 1)::float8 END AS value,
           CASE x.data_type
                WHEN 'BOOLEAN' THEN CASE WHEN (x.hk >> 36) & 1 = 1 THEN 'True' ELSE 'False' END
                WHEN 'CATEGORICAL' THEN p.categories[1 + ((x.hk >> 46) & 255) %% cardinality(p.categories)]
                WHEN 'TEXT' THEN p.score_comments[1 + ((x.hk >> 46) & 255) %% cardinality(p.score_comments)] END
             AS string_value,
           CASE WHEN (x.hk >> 54) & 7 < 2
                THEN p.score_comments[1 + ((x.hk >> 57) & 7) %% cardinality(p.score_comments)] END AS comment,
           CASE x.source
                WHEN 'EVAL' THEN jsonb_build_object(
                    'evaluator', 'llm-as-judge', 'judge_model', 'gpt-4o',
                    'template', jsonb_build_object('name', 'correctness', 'version', 1 + ((x.hk >> 60) & 3)))
                WHEN 'ANNOTATION' THEN jsonb_build_object('queue', 'weekly-review') END AS metadata,
           -- annotations are made by people
           CASE WHEN x.source = 'ANNOTATION'
                THEN p.comment_authors[1 + ((x.hk >> 40) & 255) %% cardinality(p.comment_authors)] END
             AS author_user_id
    FROM (
        SELECT k, hk,
               CASE WHEN hk & 127 < 58 THEN 'NUMERIC' WHEN hk & 127 < 83 THEN 'BOOLEAN'
                    WHEN hk & 127 < 108 THEN 'CATEGORICAL' ELSE 'TEXT' END AS data_type,
               CASE WHEN (hk >> 12) & 15 < 6 THEN 'API' WHEN (hk >> 12) & 15 < 13 THEN 'EVAL'
                    ELSE 'ANNOTATION' END AS source
        FROM (SELECT k, hashint8extended(k, %(seed)s + 13) AS hk FROM generate_series(0, 1023) AS k OFFSET 0) AS h
    ) AS x, pools AS p
    OFFSET 0
),"""),
        sql.SQL(_TRACE_FRAME_CTE),
        sql.SQL("""
INSERT INTO scores (id, project_id, trace_id, session_id, observation_id, timestamp, name, value, string_value,
                    source, data_type, comment, metadata, author_user_id, environment, created_at, updated_at)
SELECT 'sc-' || lpad(x.n::text, 8, '0') || '-' || x.s, %(project_id)s,
       CASE WHEN x.target <> 'session' THEN x.trace_id END,
       CASE WHEN x.target = 'session' THEN x.session_id END,
       CASE WHEN x.target = 'observation' THEN 'o-' || lpad(x.n::text, 8, '0') || '-1' END,
       x.scored_at, sp.name, sp.value, sp.string_value, sp.source, sp.data_type, sp.comment, sp.metadata,
       sp.author_user_id, x.environment, x.scored_at + interval '1 second', x.scored_at + interval '1 second'
FROM (
    SELECT t.n, t.trace_id, t.session_id, t.environment, s, hs,
           CASE WHEN (hs >> 8) & 15 < 3 THEN 'observation'
                -- not from the awkward traces: their session ids are rewritten afterwards
                WHEN (hs >> 8) & 15 < 5 AND t.session_id IS NOT NULL AND t.n > %(awkward_traces)s THEN 'session'
                ELSE 'trace' END AS target,
           t.ts + (t.duration_ms + 1000 * (5 + ((hs >> 16) & 511))) * interval '1 millisecond' AS scored_at
    FROM trace_frame AS t
    CROSS JOIN LATERAL generate_series(1, t.score_count) AS s
    CROSS JOIN LATERAL (SELECT hashint8extended(t.n * 4 + s, %(seed)s + 5) AS hs) AS h
    OFFSET 0
) AS x
JOIN score_profiles AS sp ON sp.k = (x.hs >> 24) & 1023
"""),
    ]
)

# About one trace in four has comments (one to three), one root observation in eight, and a few
# sessions: the comment filters and the `comments` column have something to find.
INSERT_COMMENTS_SQL = sql.Composed(
    [
        sql.SQL(_POOLS_CTE),
        sql.SQL(_TRACE_FRAME_CTE),
        sql.SQL("""
INSERT INTO comments (id, project_id, object_type, object_id, content, author_user_id, created_at, updated_at)
SELECT 'cm-' || lpad(c.n::text, 8, '0') || '-' || c.k, %(project_id)s, c.object_type,
       CASE c.object_type WHEN 'TRACE' THEN c.trace_id
                          WHEN 'OBSERVATION' THEN 'o-' || lpad(c.n::text, 8, '0') || '-1'
                          ELSE c.session_id END,
       p.comments[1 + ((c.hk >> 8) & 255) %% cardinality(p.comments)],
       CASE WHEN (c.hk >> 16) & 3 = 0 THEN NULL
            ELSE p.comment_authors[1 + ((c.hk >> 18) & 255) %% cardinality(p.comment_authors)] END,
       c.ts + (c.duration_ms + 60000 * c.k) * interval '1 millisecond',
       c.ts + (c.duration_ms + 60000 * c.k) * interval '1 millisecond'
FROM (
    SELECT t.n, t.trace_id, t.session_id, t.ts, t.duration_ms, k, hashint8extended(t.n * 8 + k, %(seed)s + 7) AS hk,
           CASE WHEN k <= 3 THEN 'TRACE' WHEN k = 4 THEN 'OBSERVATION' ELSE 'SESSION' END AS object_type
    FROM trace_frame AS t
    CROSS JOIN LATERAL (SELECT hashint8extended(t.n, %(seed)s + 8) AS hx) AS x
    CROSS JOIN LATERAL generate_series(1, 5) AS k
    WHERE (k <= 3 AND x.hx & 3 = 0 AND k <= 1 + ((x.hx >> 2) & 255) %% 3)
       OR (k = 4 AND (x.hx >> 10) & 7 = 0)
       -- not from the awkward traces: their session ids are rewritten afterwards
       OR (k = 5 AND (x.hx >> 13) & 7 = 0 AND t.session_id IS NOT NULL AND t.n > %(awkward_traces)s)
    OFFSET 0
) AS c, pools AS p
"""),
    ]
)

# One row per distinct session id of a range of traces, taken from the traces as finally written
# (awkward ids included). Ranges split on session windows, so no session straddles two ranges.
INSERT_TRACE_SESSIONS_SQL = """
INSERT INTO trace_sessions (id, project_id, bookmarked, public, environment, created_at, updated_at)
SELECT session_id, %(project_id)s,
       hashtextextended(session_id, %(seed)s) & 15 = 0,
       hashtextextended(session_id, %(seed)s + 1) & 15 = 1,
       min(environment), min(timestamp), max(timestamp)
FROM traces
WHERE project_id = %(project_id)s AND id BETWEEN %(first_id)s AND %(last_id)s AND session_id IS NOT NULL
GROUP BY session_id
"""

# The same rows, computed from the generator instead of read back: for ranges after the awkward
# head, whose traces keep their generated session ids. Session order, so the keys are appended.
GENERATE_TRACE_SESSIONS_SQL = sql.Composed(
    [
        sql.SQL(_POOLS_CTE),
        sql.SQL(_TRACE_FRAME_CTE),
        sql.SQL("""
INSERT INTO trace_sessions (id, project_id, bookmarked, public, environment, created_at, updated_at)
SELECT s.session_id, %(project_id)s,
       hashtextextended(s.session_id, %(seed)s) & 15 = 0,
       hashtextextended(s.session_id, %(seed)s + 1) & 15 = 1,
       s.environment, s.first_ts, s.last_ts
FROM (
    SELECT session_id, min(environment) AS environment, min(ts) AS first_ts, max(ts) AS last_ts
    FROM trace_frame
    WHERE session_id IS NOT NULL
    GROUP BY session_id
    ORDER BY session_id
    OFFSET 0
) AS s
"""),
    ]
)

INSERT_DATASETS_SQL = """
INSERT INTO datasets (id, project_id, name, description, metadata, created_at, updated_at)
SELECT d.id, %(project_id)s, d.name, d.description,
       jsonb_build_object('owner', 'ml-team', 'ordinal', d.ord),
       %(now)s::timestamptz - interval '29 days' + d.ord * interval '1 hour',
       %(now)s::timestamptz - interval '29 days' + d.ord * interval '1 hour'
FROM unnest(%(ids)s::text[], %(names)s::text[], %(descriptions)s::text[]) WITH ORDINALITY AS d(id, name, description, ord)
"""

INSERT_DATASET_ITEMS_SQL = sql.Composed(
    [
        sql.SQL(_POOLS_CTE),
        sql.SQL("""
items AS (
    SELECT d, k, hashint8extended(d * 1000000 + k, %(seed)s + 6) AS hi
    FROM generate_series(1, %(datasets)s) AS d, generate_series(1, %(items)s) AS k
)
INSERT INTO dataset_items (id, project_id, dataset_id, status, input, expected_output, metadata,
                           source_trace_id, source_observation_id, created_at, updated_at, valid_from)
SELECT 'di-' || lpad(i.d::text, 2, '0') || '-' || lpad(i.k::text, 5, '0'), %(project_id)s,
       'ds-' || lpad(i.d::text, 2, '0'),
       CASE WHEN (i.hi >> 8) & 15 = 0 THEN 'ARCHIVED' ELSE 'ACTIVE' END,
       jsonb_build_object('question', p.questions[1 + (i.hi & 255) %% cardinality(p.questions)],
                          'difficulty', 1 + ((i.hi >> 12) & 3)),
       jsonb_build_object('answer', p.answers[1 + (i.hi & 255) %% cardinality(p.answers)]),
       jsonb_build_object('split', CASE WHEN (i.hi >> 16) & 3 = 0 THEN 'test' ELSE 'train' END,
                          'labeler', 'annotator-' || ((i.hi >> 18) & 7)),
       CASE WHEN (i.hi >> 24) & 7 < 5 THEN 't-' || lpad((1 + ((i.hi >> 32) & 2147483647) %% %(traces)s)::text, 8, '0') END,
       CASE WHEN (i.hi >> 24) & 7 < 2 THEN 'o-' || lpad((1 + ((i.hi >> 32) & 2147483647) %% %(traces)s)::text, 8, '0') || '-1' END,
       %(now)s::timestamptz - interval '28 days' + i.k * interval '1 minute',
       %(now)s::timestamptz - interval '28 days' + i.k * interval '1 minute',
       -- one item in four was edited since: its current version is valid from a later day
       %(now)s::timestamptz - interval '28 days' + i.k * interval '1 minute'
         + CASE WHEN (i.hi >> 40) & 3 = 0 THEN (1 + ((i.hi >> 42) & 1023) %% 20) * interval '1 day' ELSE interval '0' END
FROM items AS i, pools AS p
"""),
    ]
)

INSERT_DATASET_RUNS_SQL = """
INSERT INTO dataset_runs (id, project_id, dataset_id, name, description, metadata, created_at, updated_at)
SELECT 'dr-' || lpad(d::text, 2, '0') || '-' || r, %(project_id)s, 'ds-' || lpad(d::text, 2, '0'),
       (%(run_names)s::text[])[r], 'Experiment ' || r || ' on dataset ' || d,
       jsonb_build_object('model', (ARRAY['gpt-4o-mini', 'gpt-4o', 'claude-3-5-sonnet-20241022'])[r],
                          'temperature', ((r - 1) / 2.0)::float8),
       %(now)s::timestamptz - (7 * (%(runs)s - r) + 2) * interval '1 day' + d * interval '1 hour',
       %(now)s::timestamptz - (7 * (%(runs)s - r) + 2) * interval '1 day' + d * interval '1 hour'
FROM generate_series(1, %(datasets)s) AS d, generate_series(1, %(runs)s) AS r
"""

# Every run covers the active items of its dataset, each linked to a trace (and often its root observation).
INSERT_DATASET_RUN_ITEMS_SQL = """
INSERT INTO dataset_run_items (id, project_id, dataset_run_id, dataset_item_id, trace_id, observation_id,
                               created_at, updated_at)
SELECT 'dri-' || substr(r.id, 4) || '-' || substr(i.id, 7), %(project_id)s, r.id, i.id,
       't-' || lpad(x.trace_n::text, 8, '0'),
       CASE WHEN x.h & 1 = 0 THEN 'o-' || lpad(x.trace_n::text, 8, '0') || '-1' END,
       r.created_at + (1 + (x.h >> 1) %% 3600) * interval '1 second',
       r.created_at + (1 + (x.h >> 1) %% 3600) * interval '1 second'
FROM dataset_runs AS r
JOIN dataset_items AS i ON i.project_id = r.project_id AND i.dataset_id = r.dataset_id AND i.status = 'ACTIVE'
CROSS JOIN LATERAL (
    SELECT 1 + (hashtextextended(r.id || '/' || i.id, %(seed)s) & 2147483647) %% %(traces)s AS trace_n,
           hashtextextended(i.id || '/' || r.id, %(seed)s) & 2147483647 AS h
) AS x
WHERE r.project_id = %(project_id)s
"""

# The built-in models the generations point at (`internal_model_id` model-1 … model-7), priced per token.
# Shared by every project (project_id NULL), so a second seed finds them there already.
INSERT_MODELS_SQL = """
INSERT INTO models (id, project_id, model_name, match_pattern, unit, input_price, output_price, total_price,
                    created_at, updated_at)
SELECT 'model-' || m.ord, NULL, m.name, '(?i)^(' || m.name || ')$', 'TOKENS',
       m.input_price / 1000000, m.output_price / 1000000, NULL, %(now)s, %(now)s
FROM unnest(%(models)s::text[], %(input_prices)s::numeric[], %(output_prices)s::numeric[])
     WITH ORDINALITY AS m(name, input_price, output_price, ord)
ON CONFLICT (id) DO NOTHING
"""

INSERT_AUDIT_LOG_SQL = """
INSERT INTO audit_logs (id, created_at, updated_at, type, api_key_id, user_id, org_id, user_org_role, project_id,
                        user_project_role, resource_type, resource_id, action, before, after)
VALUES (%(id)s, %(created_at)s, %(created_at)s, %(type)s, %(api_key_id)s, %(user_id)s, %(org_id)s,
        %(user_org_role)s, %(project_id)s, %(user_project_role)s, %(resource_type)s, %(resource_id)s,
        %(action)s, %(before)s, %(after)s)
"""


def trace_id(n: int) -> str:
    return f"t-{n:0{_ID_WIDTH}d}"


def seed(
    conn: psycopg.Connection[Any],
    project_id: str,
    *,
    traces: int,
    rng_seed: int = 0,
    now: datetime | None = None,
) -> dict[str, int]:
    """Fills every exportable table of `project_id`; returns the rows inserted per table.

    Timestamps fall in the 30 days before `now` (default: the database's clock) and every
    created_at is at or before it, so an export created afterwards sees all the rows. The same
    `rng_seed`, `traces` and `now` give the same rows. A project that already has traces is
    refused with `SeedError` rather than topped up, so counts and ids always describe one seed.

    Everything happens in one transaction on `conn`, except that from BULK_FROM traces on, the
    observations (the biggest table) and the datasets they point at are written by a second
    connection to the same database, so both CPU cores work; each connection writes its own
    tables, so neither waits for the other's locks. That transaction commits just before
    `conn`'s, once `conn` has written everything: an error before then leaves nothing behind.
    From BULK_FROM traces on, too, a table that holds no rows yet gets its indexes built after
    its rows are loaded (see `_indexes_built_after`).
    """
    if not 1 <= traces <= MAX_TRACES:
        raise SeedError(f"traces must be between 1 and {MAX_TRACES}, got {traces}")
    if not 0 <= rng_seed < 2**40:
        raise SeedError(f"rng_seed must be between 0 and 2**40 - 1, got {rng_seed}")
    if now is not None and now.tzinfo is None:
        raise SeedError("now must be timezone-aware (e.g. datetime.now(timezone.utc))")
    awkward = load_awkward_values()
    counts: dict[str, int] = {}
    helper: _Helper | None = None
    try:
        with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            bulk = traces >= BULK_FROM
            if bulk:
                # Bulk seeds take turns: each may drop a table's indexes, and two that had both read
                # the table before would deadlock. Readers are not held up by this lock (only by a
                # dropped index's, which is taken on empty tables alone: a fresh database).
                cur.execute("LOCK TABLE traces IN SHARE ROW EXCLUSIVE MODE")
            org = cur.execute("SELECT org_id FROM projects WHERE id = %s FOR SHARE", (project_id,)).fetchone()
            if org is None:
                raise SeedError(f"project {project_id!r} does not exist; create it first (batch-export project create)")
            if cur.execute("SELECT 1 FROM traces WHERE project_id = %s LIMIT 1", (project_id,)).fetchone():
                raise SeedError(
                    f"project {project_id!r} already has traces; seed a new project instead "
                    "(seeding twice would mix two data sets under the same ids)"
                )
            if now is None:
                (now,) = cur.execute("SELECT now()").fetchone() or (None,)
            params = _bulk_params(
                project_id, traces=traces, rng_seed=rng_seed, now=now, awkward_traces=min(traces, len(awkward.strings))
            )
            params.update(
                items=max(len(awkward.json_values), min(traces // 100, MAX_ITEMS_PER_DATASET)),
                datasets=DATASET_COUNT,
                runs=RUNS_PER_DATASET,
            )
            plan = _Plan(params, awkward, _trace_ranges(traces, params["awkward_traces"]), bulk=bulk)
            helper = _start_helper(conn, plan) if plan.bulk else None
            if helper is None:
                _add(counts, _write_observations(cur, plan))
            _add(counts, _write_traces(cur, plan))
            counts["audit_logs"] = _insert_audit_logs(cur, project_id, org[0], now, awkward)
            cur.execute(INSERT_MODELS_SQL, params)
            if helper is not None:
                _add(counts, helper.finish())
        # Fresh statistics, or the first export plans its scan as if the tables were empty. The
        # biggest table is analyzed on the helper's connection, at the same time as the others.
        if helper is not None:
            helper.start(lambda cur: _analyze(cur, _HELPER_ANALYZES))
        with conn.cursor() as cur:
            _analyze(cur, [t for t in SEEDED_TABLES if helper is None or t not in _HELPER_ANALYZES])
        if helper is not None:
            helper.finish()
    finally:
        if helper is not None:
            helper.close()
    return {table: counts[table] for table in SEEDED_TABLES}


_HELPER_ANALYZES = ("observations", "dataset_items", "dataset_run_items")


def _analyze(cur: psycopg.Cursor, tables: Sequence[str]) -> dict[str, int]:
    for table in tables:
        cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    return {}


@dataclass(frozen=True)
class _Plan:
    """What both connections need to write their tables of one seed."""

    params: dict[str, Any]
    awkward: AwkwardValues
    # The head (the session windows holding the awkward traces), then the rest, if any.
    ranges: list[dict[str, Any]]
    bulk: bool


def _write_observations(cur: psycopg.Cursor, plan: _Plan) -> dict[str, int]:
    """The datasets, then the observations, which carry the experiments of the datasets' run items."""
    _prepare_bulk_statements(cur)
    counts = _insert_datasets(cur, plan.params, plan.awkward)
    with _indexes_built_after(cur, ["observations"], plan.bulk):
        for position, trace_range in enumerate(plan.ranges):
            with _project_foreign_key_checks_skipped(cur):
                _add(
                    counts,
                    {"observations": cur.execute(INSERT_OBSERVATIONS_SQL, {**plan.params, **trace_range}).rowcount},
                )
            if position == 0:
                _place_awkward_values(cur, plan, ["observations"])
    return counts


def _write_traces(cur: psycopg.Cursor, plan: _Plan) -> dict[str, int]:
    """Traces, their scores, comments and sessions.

    The head is written, overwritten with the awkward values and read back into sessions first,
    alone: its updates look rows up by id, and while the project has no other rows, no plan can
    make them scan the project's bulk (nor, while a table is loaded before its indexes, the table).
    """
    counts: dict[str, int] = {}
    _prepare_bulk_statements(cur)
    with _indexes_built_after(cur, ["traces", "scores", "comments", "trace_sessions"], plan.bulk):
        head, *rest = plan.ranges
        _add(counts, _insert_trace_rows(cur, {**plan.params, **head}))
        _add(counts, _place_awkward_values(cur, plan, ["traces", "comments", "scores"]))
        _add(counts, _insert_trace_sessions(cur, {**plan.params, **head}))
        for trace_range in rest:
            _add(counts, _insert_trace_rows(cur, {**plan.params, **trace_range}))
            _add(counts, _generate_trace_sessions(cur, {**plan.params, **trace_range}))
    return counts


def _insert_datasets(cur: psycopg.Cursor, params: dict[str, Any], awkward: AwkwardValues) -> dict[str, int]:
    counts = {}
    counts["datasets"] = cur.execute(
        INSERT_DATASETS_SQL,
        {
            **params,
            "ids": [d[0] for d in DATASETS],
            "names": [d[1] for d in DATASETS],
            "descriptions": [d[2] for d in DATASETS],
        },
    ).rowcount
    counts["dataset_items"] = cur.execute(INSERT_DATASET_ITEMS_SQL, params).rowcount
    _place_awkward_dataset_items(cur, params["project_id"], awkward)
    counts["dataset_runs"] = cur.execute(INSERT_DATASET_RUNS_SQL, {**params, "run_names": RUN_NAMES}).rowcount
    counts["dataset_run_items"] = cur.execute(INSERT_DATASET_RUN_ITEMS_SQL, params).rowcount
    return counts


# From this many traces on, the seed is a bulk load: a second connection writes the observations
# (one connection per core on a 2-core box), and empty tables get their indexes after their rows.
BULK_FROM = 50_000
_SESSION_WINDOW = 64  # traces per session window; see _TRACE_FRAME_CTE
# Memory for each index build: Postgres's default (64MB) would sort a bulk seed's keys on disk.
_INDEX_BUILD_MEMORY = "1GB"


def _trace_ranges(traces: int, awkward_traces: int) -> list[dict[str, Any]]:
    """The head (the session windows of the awkward traces), then the rest, if any.

    The bound falls on a session window, so no session straddles the two ranges.
    """
    head_last = min(traces, -(-max(awkward_traces, 1) // _SESSION_WINDOW) * _SESSION_WINDOW)
    bounds = [(1, head_last)] + ([(head_last + 1, traces)] if head_last < traces else [])
    return [{"first": a, "last": b, "first_id": trace_id(a), "last_id": trace_id(b)} for a, b in bounds]


def _add(counts: dict[str, int], more: dict[str, int]) -> None:
    for table, n in more.items():
        counts[table] = counts.get(table, 0) + n


def _prepare_bulk_statements(cur: psycopg.Cursor) -> None:
    # Compiling these large statements with LLVM costs seconds and buys nothing here; and the
    # joins to the small profile tables must stay hash joins, which keep the rows in id order.
    cur.execute("SET LOCAL jit = off")
    cur.execute("SET LOCAL enable_mergejoin = off")


def _insert_trace_rows(cur: psycopg.Cursor, params: dict[str, Any]) -> dict[str, int]:
    """Traces, scores and comments for the trace numbers params["first"]..params["last"]."""
    with _project_foreign_key_checks_skipped(cur):
        return {
            "traces": cur.execute(INSERT_TRACES_SQL, params).rowcount,
            "scores": cur.execute(INSERT_SCORES_SQL, params).rowcount,
            "comments": cur.execute(INSERT_COMMENTS_SQL, params).rowcount,
        }


def _insert_trace_sessions(cur: psycopg.Cursor, params: dict[str, Any]) -> dict[str, int]:
    return {"trace_sessions": cur.execute(INSERT_TRACE_SESSIONS_SQL, params).rowcount}


def _generate_trace_sessions(cur: psycopg.Cursor, params: dict[str, Any]) -> dict[str, int]:
    return {"trace_sessions": cur.execute(GENERATE_TRACE_SESSIONS_SQL, params).rowcount}


# Each index of a table, with the constraint it backs (if any), as the database defines them now.
_INDEX_DEFINITIONS_SQL = """
SELECT i.relname, c.conname, pg_get_constraintdef(c.oid), pg_get_indexdef(i.oid)
FROM pg_index AS x
JOIN pg_class AS i ON i.oid = x.indexrelid
LEFT JOIN pg_constraint AS c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid
WHERE x.indrelid = %s::regclass
ORDER BY x.indisprimary DESC, i.relname
"""


@contextmanager
def _indexes_built_after(cur: psycopg.Cursor, tables: Sequence[str], bulk: bool) -> Iterator[None]:
    """In a bulk seed, drops the indexes of each table that holds no rows yet, and builds them again
    (exactly as defined before: read from the catalog) once the block has loaded the table.

    One sort per index costs a fraction of inserting every row into every index, and uses both
    cores (a parallel build). DDL is transactional: a seed that fails or is killed leaves the
    indexes as they were. A table that holds rows already keeps its indexes: rebuilding them would
    cost in proportion to those rows too, and keep their readers waiting for the whole seed.
    """
    empty = [table for table in tables if bulk and _is_empty(cur, table)]
    definitions = [(table, *row) for table in empty for row in cur.execute(_INDEX_DEFINITIONS_SQL, (table,)).fetchall()]
    for table, index, constraint, _, _ in definitions:
        if constraint is None:
            cur.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))
        else:
            cur.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(sql.Identifier(table), sql.Identifier(constraint))
            )
    yield
    if definitions:
        cur.execute(sql.SQL("SET LOCAL maintenance_work_mem = {}").format(sql.Literal(_INDEX_BUILD_MEMORY)))
    for table, _, constraint, constraint_definition, index_definition in definitions:
        if constraint is None:
            cur.execute(sql.SQL(index_definition))
        else:
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(sql.Identifier(table), sql.Identifier(constraint))
                + sql.SQL(constraint_definition)
            )


def _is_empty(cur: psycopg.Cursor, table: str) -> bool:
    return cur.execute(sql.SQL("SELECT 1 FROM {} LIMIT 1").format(sql.Identifier(table))).fetchone() is None


class _Helper:
    """A second connection doing work in a thread (start), committed only by finish()."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.counts: dict[str, int] = {}
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def start(self, work: Callable[[psycopg.Cursor], dict[str, int]]) -> None:
        self.counts = {}
        self.thread = threading.Thread(target=self._run, args=(work,), name="seed-helper", daemon=True)
        self.thread.start()

    def _run(self, work: Callable[[psycopg.Cursor], dict[str, int]]) -> None:
        try:
            with self.conn.cursor(row_factory=tuple_row) as cur:
                _add(self.counts, work(cur))
        except BaseException as exc:  # handed to the main thread by finish()
            self.error = exc

    def finish(self) -> dict[str, int]:
        if self.thread is not None:
            self.thread.join()
        if self.error is not None:
            raise self.error
        self.conn.commit()
        return self.counts

    def close(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            # The main thread failed: stop the helper's statement so its transaction can roll back.
            self.conn.cancel_safe()
            self.thread.join()
        self.conn.close()  # rolls back anything not committed by finish()


def _start_helper(conn: psycopg.Connection[Any], plan: _Plan) -> _Helper | None:
    """Opens a second connection with `conn`'s parameters, writing the observations (and datasets);
    or returns None to write everything on `conn`."""
    # conn.info.dsn hides the password; the libpq options behind it carry it.
    options = {o.keyword.decode(): o.val.decode() for o in conn.pgconn.info if o.val is not None}
    try:
        helper_conn = psycopg.connect(conninfo.make_conninfo(**options))
    except psycopg.OperationalError:
        return None
    helper = _Helper(helper_conn)
    helper.start(lambda cur: _write_observations(cur, plan))
    return helper


@contextmanager
def _project_foreign_key_checks_skipped(cur: psycopg.Cursor) -> Iterator[None]:
    """Turns off foreign-key triggers for the bulk inserts, when the role may (superusers may).

    Each bulk row's only foreign key is its project, checked by a per-row trigger that costs about
    as much as the insert itself. The project row is locked FOR SHARE above, so every check would
    pass. `replica` also silences any other trigger, and the seeded tables have none. Without the
    privilege the checks simply run, and seeding is slower.
    """
    try:
        with cur.connection.transaction():
            cur.execute("SET LOCAL session_replication_role = replica")
    except psycopg.errors.InsufficientPrivilege:
        yield
        return
    yield
    cur.execute("SET LOCAL session_replication_role = DEFAULT")


def _bulk_params(project_id: str, *, traces: int, rng_seed: int, now: datetime, awkward_traces: int) -> dict[str, Any]:
    window = timedelta(days=30) - timedelta(hours=1)
    params: dict[str, Any] = dict(POOLS)
    params.update(
        project_id=project_id,
        traces=traces,
        # Each statement adds small offsets to pick independent hash streams; keep seeds apart.
        seed=rng_seed * 64,
        now=now,
        # Trace n starts in the n-th slice of the 30 days; the last hour stays free so that every
        # observation and score of the newest traces still ends before `now`.
        start=now - timedelta(days=30) + timedelta(minutes=1),
        step_ms=window // timedelta(milliseconds=1) // traces,
        users=max(1, traces // 25),
        awkward_traces=awkward_traces,
        questions_count=len(POOLS["questions"]),
        models_count=len(POOLS["models"]),
        input_prices=[p[0] for p in MODEL_PRICES],
        output_prices=[p[1] for p in MODEL_PRICES],
    )
    return params


def _place_awkward_values(cur: psycopg.Cursor, plan: _Plan, tables: Sequence[str]) -> dict[str, int]:
    """Writes the awkward values of `tables` over the first traces (and their root observation and first score).

    Trace slot i carries string i as its name; rotations of the same list fill user ids, releases,
    versions, tags, metadata, outputs, observation names and status messages, score values and
    comments, so with 44+ traces every string is in each of those columns. With fewer traces than
    strings, the strings left over go into the tags of slot (index mod traces), so each one is
    still present somewhere. JSON values go into trace inputs and metadata, observation inputs,
    and (whatever the size) dataset items and audit logs.
    """
    project_id, traces = plan.params["project_id"], plan.params["traces"]
    strings, values = plan.awkward.strings, plan.awkward.json_values
    s_count, v_count = len(strings), len(values)
    slots = min(traces, s_count)

    def rotated(i: int, shift: int) -> str:
        return strings[(i + shift) % s_count]

    trace_rows, observation_rows, score_rows, comment_rows = [], [], [], []
    for i in range(slots):
        n = i + 1
        name = strings[i]
        leftovers = [strings[j] for j in range(slots, s_count) if j % slots == i]
        trace_rows.append(
            {
                "project_id": project_id,
                "id": trace_id(n),
                "name": name,
                "user_id": rotated(i, 1),
                "release": rotated(i, 2),
                "version": rotated(i, 3),
                # Only short values as session ids: the column is indexed.
                "session_id": name if i % 3 == 0 and 0 < len(name) <= _MAX_AWKWARD_SESSION_ID else None,
                "keep_session": not (i % 3 == 0 and 0 < len(name) <= _MAX_AWKWARD_SESSION_ID),
                "tags": [rotated(i, 4), "awkward", *leftovers],
                "input": Jsonb(values[i % v_count]),
                "output": Jsonb(rotated(i, 5)),
                "metadata": Jsonb(
                    {
                        "note": rotated(i, 6),
                        "value": values[(i + 1) % v_count],
                        "nested": {"list": [rotated(i, 7), i], "empty": {}},
                    }
                ),
            }
        )
        observation_rows.append(
            {
                "project_id": project_id,
                "id": f"o-{n:0{_ID_WIDTH}d}-1",
                "name": rotated(i, 8),
                "level": "ERROR" if i % 2 == 0 else "WARNING",
                "status_message": rotated(i, 9),
                "input": Jsonb(values[(i + 2) % v_count]),
                "output": Jsonb(rotated(i, 10)),
                "metadata": Jsonb({"note": rotated(i, 11)}),
            }
        )
        comment_rows.append(
            {
                "project_id": project_id,
                "id": f"cm-{n:0{_ID_WIDTH}d}-9",
                "trace_id": trace_id(n),
                "content": rotated(i, 14),
            }
        )
        score_rows.append(
            {
                "project_id": project_id,
                "id": f"sc-{n:0{_ID_WIDTH}d}-1",
                "string_value": rotated(i, 12),
                "comment": rotated(i, 13),
            }
        )
    rows = {"traces": trace_rows, "observations": observation_rows, "comments": comment_rows, "scores": score_rows}
    for table in tables:
        cur.executemany(_AWKWARD_SQL[table], rows[table])
    return {"comments": len(comment_rows)} if "comments" in tables else {}


_AWKWARD_SQL = {
    "traces": """
UPDATE traces SET name = %(name)s, user_id = %(user_id)s, release = %(release)s, version = %(version)s,
       session_id = CASE WHEN %(keep_session)s THEN session_id ELSE %(session_id)s END,
       tags = %(tags)s, input = %(input)s, output = %(output)s, metadata = %(metadata)s
WHERE project_id = %(project_id)s AND id = %(id)s""",
    "observations": """
UPDATE observations SET name = %(name)s, level = %(level)s, status_message = %(status_message)s,
       input = %(input)s, output = %(output)s, metadata = %(metadata)s
WHERE project_id = %(project_id)s AND id = %(id)s""",
    # Each awkward trace also gets one comment holding an awkward string, written a minute after the trace.
    "comments": """
INSERT INTO comments (id, project_id, object_type, object_id, content, created_at, updated_at)
SELECT %(id)s, %(project_id)s, 'TRACE', t.id, %(content)s, t.created_at, t.created_at
FROM traces t WHERE t.project_id = %(project_id)s AND t.id = %(trace_id)s""",
    # The bulk gives every awkward slot at least one score; it becomes a TEXT score (no numeric value).
    "scores": """
UPDATE scores SET name = 'reviewer_note', data_type = 'TEXT', value = NULL,
       string_value = %(string_value)s, comment = %(comment)s
WHERE project_id = %(project_id)s AND id = %(id)s""",
}


def _place_awkward_dataset_items(cur: psycopg.Cursor, project_id: str, awkward: AwkwardValues) -> None:
    """The first items of the first dataset carry every JSON value (items per dataset >= their count)."""
    strings, values = awkward.strings, awkward.json_values
    rows = [
        {
            "project_id": project_id,
            "id": f"di-01-{k + 1:05d}",
            "input": Jsonb(value),
            "expected_output": Jsonb(values[(k + 1) % len(values)]),
            "metadata": Jsonb({"note": strings[k % len(strings)], "value": value}),
        }
        for k, value in enumerate(values)
    ]
    cur.executemany(
        """UPDATE dataset_items SET input = %(input)s, expected_output = %(expected_output)s, metadata = %(metadata)s
           WHERE project_id = %(project_id)s AND id = %(id)s""",
        rows,
    )


def _insert_audit_logs(cur: psycopg.Cursor, project_id: str, org_id: str, now: datetime, awkward: AwkwardValues) -> int:
    """A few changes to datasets, prompts and traces; before/after cycle through the awkward JSON values."""
    values = awkward.json_values
    actions = [
        ("dataset", "ds-01", "create"),
        ("dataset", "ds-02", "create"),
        ("dataset", "ds-03", "create"),
        ("trace", trace_id(1), "bookmark"),
        ("prompt", "support-answer", "create"),
        ("prompt", "support-answer", "update"),
        ("datasetRun", "dr-01-1", "create"),
        ("trace", trace_id(1), "update"),
        ("apiKey", "pk-lf-demo", "create"),
        ("scoreConfig", "correctness", "create"),
        ("prompt", "summarizer", "delete"),
        ("dataset", "ds-03", "update"),
    ]
    rows = []
    for k in range(max(AUDIT_LOG_COUNT, len(values))):
        resource_type, resource_id, action = actions[k % len(actions)]
        by_api_key = k % 4 == 3
        rows.append(
            {
                # audit_logs.id is a global key, so it names the project to stay unique across projects.
                "id": f"audit-{k + 1:03d}-{project_id}",
                "created_at": now - timedelta(days=29) + timedelta(days=2 * k, minutes=7 * k),
                "type": "API_KEY" if by_api_key else "USER",
                "api_key_id": "pk-lf-demo" if by_api_key else None,
                "user_id": None if by_api_key else f"user-{k % 3:06d}",
                "org_id": org_id,
                "user_org_role": None if by_api_key else ("OWNER", "ADMIN", "MEMBER")[k % 3],
                "project_id": project_id,
                "user_project_role": None if by_api_key or k % 2 else "ADMIN",
                "resource_type": resource_type,
                "resource_id": resource_id,
                "action": action,
                "before": None if action == "create" and k >= len(values) else Jsonb(values[k % len(values)]),
                "after": None if action == "delete" and k >= len(values) else Jsonb(values[(k + 3) % len(values)]),
            }
        )
    cur.executemany(INSERT_AUDIT_LOG_SQL, rows)
    return len(rows)


# --- live ingestion ---------------------------------------------------------------------------------


def ingest_live(
    conn: psycopg.Connection[Any], project_id: str, *, per_second: float, seconds: float | None = None
) -> int:
    """Inserts traces as ingestion does, one transaction each, until `seconds` have passed (None: until
    interrupted): each with `created_at` = now(), one observation and one score. Returns the traces added.

    Unlike `seed`, it adds to a project that has rows already: what a scheduled export's later windows see."""
    import time
    import uuid

    if per_second <= 0:
        raise SeedError(f"the rate must be positive, got {per_second}")
    started = time.monotonic()
    added = 0
    try:
        while seconds is None or time.monotonic() - started < seconds:
            trace_id = f"live-{uuid.uuid4().hex}"
            with conn.transaction():
                conn.execute(
                    "INSERT INTO traces (id, project_id, timestamp, name, user_id, environment, input, output)"
                    " VALUES (%s, %s, now(), 'live chat', 'live-user', 'production', '\"hello\"', '\"hi!\"')",
                    (trace_id, project_id),
                )
                conn.execute(
                    "INSERT INTO observations (id, project_id, trace_id, type, name, start_time, end_time, level)"
                    " VALUES (%s, %s, %s, 'GENERATION', 'llm call', now(), now(), 'DEFAULT')",
                    (f"{trace_id}-obs", project_id, trace_id),
                )
                conn.execute(
                    "INSERT INTO scores (id, project_id, trace_id, name, value, source, data_type, timestamp)"
                    " VALUES (%s, %s, %s, 'quality', 1, 'API', 'NUMERIC', now())",
                    (f"{trace_id}-score", project_id, trace_id),
                )
            added += 1
            time.sleep(1 / per_second)
    except KeyboardInterrupt:
        pass
    return added
