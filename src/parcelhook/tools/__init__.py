"""Local tools for integrators: `trigger` sends emulated webhooks, `listen` receives them.

Import the commands from their modules (`parcelhook.tools.trigger.trigger_command`,
`parcelhook.tools.listen.listen_command`) so `python -m` on a module runs it only once.
"""
