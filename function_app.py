"""Composition root (Functions v2 programming model): one app, the blueprints of functions/.

Settings are validated here, at load: a wrong value stops the host with an error naming the setting.
Telemetry starts here too, before any function runs (mailgw/telemetry.py says where it goes).
"""

import azure.functions as func

from functions.delivery import bp as delivery
from functions.http_api import bp as http_api
from functions.maintenance import bp as maintenance
from mailgw import telemetry
from mailgw.services import check_configuration

check_configuration()
telemetry.configure()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(http_api)
app.register_functions(delivery)
app.register_functions(maintenance)
