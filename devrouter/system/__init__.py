"""`devrouter service install|uninstall|status`: the router as a login service (a systemd
user unit on Linux, a launchd agent on macOS), and the system units that give it port 80.

units (the files as text, sans-IO), install (where they go, the plans of steps, running
them, the status), command (the command line).
"""
