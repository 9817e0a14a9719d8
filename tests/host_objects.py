"""The objects the Functions worker hands our functions, built the way the worker builds them."""
import json
import types
import uuid
from datetime import UTC, datetime

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_ext
from azurefunctions.extensions.base import Datum
from azurefunctions.extensions.bindings.blob.blobClientConverter import BlobClientConverter


def sdk_blob_client(container_name, blob_name):
    """Exactly what the worker hands the function: the extension decodes the host's model binding data."""
    content = json.dumps({"Connection": "IMAGES_STORAGE", "ContainerName": container_name, "BlobName": blob_name})
    data = types.SimpleNamespace(version="1.0", source="AzureStorageBlobs", content_type="application/json",
                                 content=content)
    return BlobClientConverter.decode(Datum(value=data, type="model_binding_data"), trigger_metadata={},
                                      pytype=blob_ext.BlobClient)


def deleted_event(container_name, blob_name, event_type="Microsoft.Storage.BlobDeleted"):
    return func.EventGridEvent(
        id=str(uuid.uuid4()), data={"api": "DeleteBlob", "url": f"https://acct.blob.core.windows.net/x/{blob_name}"},
        topic="/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/acct",
        subject=f"/blobServices/default/containers/{container_name}/blobs/{blob_name}",
        event_type=event_type, event_time=datetime.now(UTC), data_version="1")
