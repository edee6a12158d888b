"""/docs: the API description as one self-contained HTML page, rendered on
the server from the OpenAPI document (FastAPI's own page loads Swagger UI
from a CDN, which fails offline and asks the visitor's browser to run
third-party code)."""
from __future__ import annotations

import html
from typing import Any

_STYLE = ("body{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;"
          "padding:0 1rem;color:#222}h2{margin-top:2rem;font-family:monospace}"
          "table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ccc;"
          "padding:.25rem .5rem;text-align:left;vertical-align:top}code{background:#f3f3f3}")


def _schema(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
  ref = schema.get("$ref")
  if ref:
    return spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
  return schema


def _type(schema: dict[str, Any]) -> str:
  if "anyOf" in schema:
    return " | ".join(_type(s) for s in schema["anyOf"])
  if schema.get("format") == "binary" or schema.get("contentMediaType"):
    return "file"
  return str(schema.get("type", schema.get("$ref", "object").rsplit("/", 1)[-1]))


def render(spec: dict[str, Any]) -> str:
  """The OpenAPI document `spec` as an HTML page (no scripts, no external
  resources)."""
  esc = html.escape
  info = spec.get("info", {})
  out = [f"<!doctype html><html><head><meta charset=utf-8><title>{esc(info.get('title', ''))}"
         f" API</title><style>{_STYLE}</style></head><body>",
         f"<h1>{esc(info.get('title', ''))} API</h1><p>{esc(info.get('summary', ''))}</p>",
         "<p>Machine-readable: <a href=\"/openapi.json\"><code>/openapi.json</code></a>. "
         "Every error is JSON <code>{\"error\": {\"code\", \"message\"}}</code>.</p>"]
  for path, methods in spec.get("paths", {}).items():
    for method, op in methods.items():
      out.append(f"<h2>{esc(method.upper())} {esc(path)}</h2>")
      if op.get("summary"):
        out.append(f"<p>{esc(op['summary'])}</p>")
      if op.get("description"):
        out.append(f"<p>{esc(op['description'])}</p>")
      for media, content in op.get("requestBody", {}).get("content", {}).items():
        form = _schema(spec, content.get("schema", {}))
        required = set(form.get("required", []))
        out.append(f"<p>Request body: <code>{esc(media)}</code></p><table><tr><th>field"
                   "</th><th>type</th><th></th><th>what</th></tr>")
        for name, field in form.get("properties", {}).items():
          out.append(f"<tr><td><code>{esc(name)}</code></td><td>{esc(_type(field))}</td>"
                     f"<td>{'required' if name in required else ''}</td>"
                     f"<td>{esc(field.get('description', ''))}</td></tr>")
        out.append("</table>")
      out.append("<table><tr><th>status</th><th>what</th></tr>")
      for status, response in op.get("responses", {}).items():
        out.append(f"<tr><td>{esc(str(status))}</td>"
                   f"<td>{esc(response.get('description', ''))}</td></tr>")
      out.append("</table>")
  out.append("</body></html>")
  return "\n".join(out)
