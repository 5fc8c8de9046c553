"""NextPanel, a small billing backend that installs and loads plugins with atomicplug.

``create_app(config_path, admin_token)`` builds the FastAPI app; see README.md.
"""
