"""HTTP page, protected by a function key: the contact sheet of a run or a product from the deployed app.

``GET /api/runs/sheet?run=<run id>|latest`` or ``?item=<product id>``: the same self-contained page as
``image-sync runs sheet`` (see ``shared/runs/contact_sheet.py``), whose thumbnails are SAS URLs valid for one
hour. The response is never cached and sends no referrer, so neither the function key nor a SAS URL
travels further than the browser that asked. Its Content-Security-Policy allows the page's one style sheet
and one script by their hashes (no 'unsafe-inline'), images, and no framing.
"""
import logging

import azure.functions as func

from shared.app import jobs
from shared.runs.contact_sheet import CONTENT_SECURITY_POLICY

log = logging.getLogger(__name__)
bp = func.Blueprint()

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}


@bp.function_name("contact_sheet")
@bp.route(route="runs/sheet", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def contact_sheet(req: func.HttpRequest) -> func.HttpResponse:
    status, body = jobs.contact_sheet_page(req.params.get("run"), req.params.get("item"))
    if status != 200:
        log.info("contact sheet not served (%d): %s", status, body)
    return func.HttpResponse(body, status_code=status, headers=HEADERS, charset="utf-8",
                             mimetype="text/html" if status == 200 else "text/plain")
