"""Composition root (Functions v2 programming model): one app, the blueprints of functions/."""

import azure.functions as func

from functions.delivery import bp as delivery
from functions.http_api import bp as http_api

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(http_api)
app.register_functions(delivery)
