"""Azure Event Grid on your laptop: the broker (emulator) as a Flask app.

`create_app(config)` builds the app and its engine; `python -m broker` serves it with waitress.
"""

from __future__ import annotations

from flask import Flask

from .config import Config


def create_app(config: Config | None = None, start: bool = True, clock=None) -> Flask:
    """Build the broker app. With `start` the dispatcher and validator threads run; tests of the
    HTTP surface alone can pass `start=False` and call `app.extensions["broker"].start()` later;
    `clock` replaces the wall clock (tests move time by hand)."""
    from . import api, arm, dashboard, errors, health, management, security
    from .engine import Engine
    from .ingress import PublishMiddleware

    config = config or Config.from_env()
    app = Flask(__name__, static_folder=None)  # the dashboard blueprint serves /dashboard/static
    app.config["MAX_CONTENT_LENGTH"] = None  # the publish API answers 413 itself, in Azure's shape
    engine = Engine(config, clock)
    app.extensions["broker"] = engine
    errors.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(management.bp)
    app.register_blueprint(arm.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(dashboard.bp)
    # Delivery results reach the store a few milliseconds after the attempt (see Store._submit):
    # whatever a read shows includes every attempt already announced on the live feed.
    security.init_app(app, engine.guard)
    app.before_request(engine.store.settle)
    app.wsgi_app = PublishMiddleware(app.wsgi_app, engine)  # the publish hot path, without Flask
    if start:
        engine.start()
    return app


__all__ = ["Config", "create_app"]
