"""The web service: the app factory (app), the routes (handlers), their middlewares, guards, problems
(JSON errors), sending (send timeouts, aborts), metrics, and the browser page (browser, static/)."""
