"""Local Sphinx extension of the book: each script tag once per page.

Jupyter Book 1 (sphinx-thebe 0.3, sphinx-togglebutton 0.4 under Sphinx 7.4) registers the inline
configuration scripts of thebe and the toggle button twice, so every page declares
``const THEBE_JS_URL`` twice and the browser reports a SyntaxError. This drops the repeats.
"""
from __future__ import annotations


def _key(js) -> tuple:
    # an inline script is registered once with filename None and once with "": same script
    name = getattr(js, "filename", js) or ""
    attrs = getattr(js, "attributes", {}) or {}
    return (str(name), tuple(sorted((k, str(v)) for k, v in attrs.items())))


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    """``html-page-context`` handler: keep the first of identical script entries."""
    files = context.get("script_files")
    if not files:
        return
    seen, kept = set(), []
    for js in files:
        k = _key(js)
        if k not in seen:
            seen.add(k)
            kept.append(js)
    context["script_files"] = kept


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
