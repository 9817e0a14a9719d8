"""The Functions app: builds the app and registers the blueprints. Nothing else lives here."""
import azure.functions as func

from functions.contact_sheet import bp as contact_sheet
from functions.image_deleted import bp as image_deleted
from functions.image_uploaded import bp as image_uploaded
from functions.nightly_sync import bp as nightly_sync
from functions.product_sync import bp as product_sync
from functions.resubmit import bp as resubmit
from functions.sync_shard import bp as sync_shard

app = func.FunctionApp()
for blueprint in (image_uploaded, image_deleted, product_sync, nightly_sync, sync_shard, contact_sheet, resubmit):
    app.register_functions(blueprint)
