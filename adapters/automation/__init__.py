"""Automation runners (bridge.core.automation): AWX / Ansible Automation Platform job templates and
Event-Driven Ansible webhooks, found through the entry-point group `alert_ticket_bridge.automation`."""
