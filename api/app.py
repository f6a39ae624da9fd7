"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.audit_trail import AuditTrail, install_audit_middleware
from api.authentication import FailureLimiter
from api.dashboard import mount_dashboard
from api.dependencies import AppServices
from api.errors import ERROR_RESPONSES, install_error_handlers
from api.http_hardening import install_body_limit, install_response_hardening
from api.routes import (
    alerts,
    audit,
    collectors,
    detection_schedule,
    disclosures,
    events,
    health,
    incidents,
    ingest,
    situation,
    taxii,
)
from detection.alerts import AlertStore
from detection.background_detection import BackgroundDetection
from lianfang.collection_health import DeadLetterCounter
from lianfang.dead_letter import DeadLetterFile
from lianfang.incidents import INCIDENT_FIELDS
from lianfang.principals import PrincipalStore
from lianfang.settings import Settings, load_settings
from lianfang.store import EventStore, IndexNames, connect, install_index
from lianfang.webhooks import WebhookNotifier


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the Elasticsearch client is created at start-up, closed at shutdown."""
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = connect(settings)
        store = EventStore(client, IndexNames(settings.index_prefix))
        store.install_templates()
        principals = PrincipalStore(client, settings.index_prefix)
        principals.install()
        AlertStore(client, settings.index_prefix).install()
        trail = AuditTrail(client, settings.index_prefix, DeadLetterFile(settings.dead_letter_dir))
        trail.install()
        install_index(client, store.names.incidents, INCIDENT_FIELDS)
        webhooks = WebhookNotifier(settings.webhook_urls, DeadLetterFile(settings.dead_letter_dir))
        app.state.services = AppServices(
            settings=settings,
            client=client,
            store=store,
            principals=principals,
            failure_limiter=FailureLimiter(),
            audit=trail,
            webhooks=webhooks,
            dead_letter_counter=DeadLetterCounter(settings.dead_letter_dir),
        )
        # detect run's passes in a background thread (detection/background_detection.py).
        detection = None
        if settings.detection_rules.schedule_in_serve:
            detection = BackgroundDetection.from_settings(settings, client)
            detection.start()
        app.state.detection_schedule = detection
        try:
            yield
        finally:
            if detection is not None:
                await asyncio.to_thread(detection.stop)  # before the client it uses closes
            trail.close()
            webhooks.close()
            client.close()

    app = FastAPI(
        title="Lianfang API",
        version="0.1.0",
        description="Security situational awareness and threat sharing (联防).",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(events.router)
    app.include_router(alerts.router)
    app.include_router(audit.router)
    app.include_router(incidents.router)
    app.include_router(disclosures.router)
    app.include_router(situation.router)
    app.include_router(ingest.router)
    app.include_router(collectors.router)
    app.include_router(detection_schedule.router)
    taxii.mount(app)  # /taxii2/: a sub-application with TAXII's own media type and errors
    mount_dashboard(app)  # last: the page at / must not shadow any API route
    # Inner to outer: the body limit (inside the audit, so refusals are audited), the audit,
    # then security headers and CORS around everything.
    # Exempt: TAXII and ingest enforce their own limits (max_content_length, api_ingest_max_bytes).
    install_body_limit(
        app, settings.api_max_body_bytes, exempt_prefixes=[taxii.MOUNT_PATH, ingest.PATH]
    )
    install_audit_middleware(app)
    install_response_hardening(app, settings.api_cors_origins)
    return app
