"""The server-rendered dashboard: pages, forms, sessions and CSRF protection.

`healthscore.service.dashboard.routes.install_dashboard` mounts it on the app.
"""
