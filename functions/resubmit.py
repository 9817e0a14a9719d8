"""HTTP, protected by a function key: resubmit a failed run from the deployed app (see ``shared/app/resubmit.py``).

``POST /api/runs/resubmit?run=<run id>`` (or the run in a form field or a JSON body ``{"run": ...}``) sends again
what that kept run left undone, as the container holds it now, and answers JSON: the resubmit's run id,
``created`` (false: another request resubmitted the run first, and this one names it), its ``state``, and the
outcome. Idempotent per run: a double click sends once. ``latest`` is refused: it may name another run by the
second click.

``POST /api/runs/sheet`` is the contact sheet's button (``resubmit_from_sheet``): the page's form has no
``action``, so it posts to the page's own address, function key included, and the key is never written into the
page. It answers with the contact sheet of the resubmit. Only POST: a link or a prefetch cannot resubmit.
"""
import json
import logging

import azure.functions as func

from functions.contact_sheet import HEADERS
from shared.app import jobs

log = logging.getLogger(__name__)
bp = func.Blueprint()


def _run_of(req: func.HttpRequest) -> str | None:
    """The run to resubmit: a form field, a JSON body's ``run``, or the query's ``run`` (in that order)."""
    form_run = req.form.get("run") if req.form else None
    if form_run:
        return str(form_run)
    try:
        body = req.get_json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("run"), str):
        return str(body["run"])
    return req.params.get("run")


@bp.function_name("resubmit")
@bp.route(route="runs/resubmit", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def resubmit(req: func.HttpRequest) -> func.HttpResponse:
    status, answer = jobs.resubmit(_run_of(req))
    if status != 200:
        log.info("resubmit not done (%d): %s", status, answer.get("error"))
    return func.HttpResponse(json.dumps(answer), status_code=status, mimetype="application/json",
                             headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})


@bp.function_name("resubmit_from_sheet")
@bp.route(route="runs/sheet", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def resubmit_from_sheet(req: func.HttpRequest) -> func.HttpResponse:
    run = req.form.get("run") if req.form else None  # the form's field: never the address's run (maybe latest)
    status, body, mimetype = jobs.resubmit_page(str(run) if run else None)
    if status != 200:
        log.info("resubmit from the contact sheet not done (%d): %s", status, body)
    return func.HttpResponse(body, status_code=status, headers=HEADERS, charset="utf-8", mimetype=mimetype)
