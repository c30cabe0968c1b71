"""Talking to the Kubernetes API: client, Events, the child cache and the drift check."""
