"""A development stand-in for the Azure Functions host (``func start``), for this project's app.

``python -m devhost [--app-dir DIR] [--host 127.0.0.1] [--port 7071] [--verbose]`` imports
``function_app.py``, discovers its functions through ``app.get_functions()``, serves the HTTP
triggers with aiohttp, runs the queue triggers with the WebJobs SDK's polling, lease, retry and
poison-queue semantics, and runs the timer triggers on their NCRONTAB schedules
(``devhost.timers``). It prints ``Dev host ready: http://HOST:PORT (N functions)`` when every
listener runs; ``GET /admin/host/status`` then answers ``{"state": "Running"}``. SIGINT or
SIGTERM stop it gracefully (exit code 0); a start-up problem is exit code 1 with the reason.

Configuration is the app's own: ``local.settings.json`` (copied from the sample when missing;
the environment wins), ``host.json`` plus ``AzureFunctionsJobHost__*`` overrides. Knobs of the dev
host itself, all optional:

``DEVHOST_LOG_LEVEL``            logging level (INFO); ``--verbose`` means DEBUG
``DEVHOST_QUEUE_LEASE_SECONDS``  visibility of a message while its function runs (600, as Azure)
``DEVHOST_MAX_REQUEST_BYTES``    HTTP request body limit; else the host's own setting
                                 ``FUNCTIONS_REQUEST_BODY_SIZE_LIMIT``, else 104857600 (as Azure)
``DEVHOST_SHUTDOWN_SECONDS``     how long a stop waits for running invocations (30)
``DEVHOST_PACING_WINDOW_SECONDS`` the gateway's rolling 24-hour sending window, shortened for
                                 tests (budgets refill after this many seconds)
``DEVHOST_TIMERS``               ``off`` keeps every timer trigger from running (on); one function
                                 is switched off as in Azure, ``AzureWebJobs.<name>.Disabled=true``

It also serves ``/_dev/mail``, a mail viewer for this project's gateway (``devhost.mail_viewer``):
what the outbox transport wrote (``MAILGW_OUTBOX_DIR``) and what the local Graph or SMTP stand-ins
received, at the admin URLs ``make run`` gives it (``MAILGW_DEV_GRAPH_ADMIN_URL``,
``MAILGW_DEV_SMTP_ADMIN_URL``).

``python -m devhost.azurite`` runs Azurite (from package.json) in the foreground; the
``devhost.azurite.Azurite`` class starts it for tests and benchmarks.
"""

__all__: list[str] = []
