"""The web console: a server-rendered ASGI application over the Kubernetes API (`dth console`)."""
